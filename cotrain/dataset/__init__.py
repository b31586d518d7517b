"""The on-disk dataset contract: what a converted dataset is and how to read and check it.

Sample keys and modalities, `manifest.json`, the deterministic shard writer and reader, the member
index (tar scan and `.idx.json` sidecar), exact norm stats, storage (local or fsspec URL), and the
back ends of `validate`, `inspect` (summary) and `preview`. Imports only the foundations and media.
"""
