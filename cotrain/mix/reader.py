"""Random access to the samples of one converted dataset, by global sample index.

Sample i lies in the shard whose cumulative count covers i (counts from the manifest). Each shard's
member index gives the byte span of the sample; its members are adjacent, so one ranged read
fetches the whole sample. The index comes from the shard's sidecar (cotrain/shardindex.py) when it
matches the manifest, else from a tar header scan; either way once per shard and process, kept in
an LRU.

The sampler draws a source's samples in one permutation over all its shards, so consecutive reads
hit shards at random: the LRU must hold every shard of a typical source, or nearly every read
re-scans a whole shard. Indices are therefore compact (flat numpy spans: ~200 bytes per sample of 6
members, mostly the key, against ~1.4 KB as dicts), and the default keeps 1,024 shards: a source of
up to a million samples at the converters' 1,000 per shard, ~200 MB per process when all are held.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Collection
from itertools import accumulate
from typing import Any

from cotrain.errors import DataError
from cotrain.manifest import Manifest
from cotrain.mix.storage import RangeReader, StorageOptions, join
from cotrain.shardindex import ShardIndex, index_name, parse_index
from cotrain.shards import decode_sample, index_shard

log = logging.getLogger(__name__)


class SourceReader:
    """Reads raw samples of one dataset.

    Args:
        url: dataset directory or URL.
        manifest: its manifest (shard names and counts).
        storage_options: how to reach `url` on object storage (None: the back end's defaults).
        max_indexed_shards: shard indices kept in memory per process.
    """

    def __init__(self, url: str, manifest: Manifest, storage_options: StorageOptions | None = None,
                 max_indexed_shards: int = 1024) -> None:
        self.url = url
        self.manifest = manifest
        self._bounds = list(accumulate(s.samples for s in manifest.shards))
        self._files = RangeReader(url, storage_options)
        self._indices: OrderedDict[str, ShardIndex] = OrderedDict()
        self._max = max_indexed_shards
        self._entries = {s.name: s for s in manifest.shards}

    def __len__(self) -> int:
        return self._bounds[-1] if self._bounds else 0

    def locate(self, index: int) -> tuple[str, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {self.url} ({len(self)} samples)")
        s = bisect_right(self._bounds, index)
        start = self._bounds[s - 1] if s else 0
        return self.manifest.shards[s].name, index - start

    def _index(self, shard: str) -> ShardIndex:
        if shard in self._indices:
            self._indices.move_to_end(shard)
            return self._indices[shard]
        index = self._sidecar(shard)
        if index is None:  # (not `or`: an index of an empty shard has length 0)
            index = self._scan(shard)
        self._indices[shard] = index
        if len(self._indices) > self._max:
            self._indices.popitem(last=False)
        return index

    def _sidecar(self, shard: str) -> ShardIndex | None:
        entry = self._entries.get(shard)
        if entry is None:
            return None
        where = join(self.url, index_name(shard))
        try:
            data = self._files.read_all(index_name(shard))
        except FileNotFoundError:
            return None  # datasets converted before sidecars existed, or written by other tools
        except OSError as exc:
            log.warning("%s: unreadable (%s); scanning the shard instead", where, exc)
            return None
        try:
            return parse_index(data, where, entry.bytes, entry.samples)
        except DataError as exc:
            log.warning("%s; scanning the shard instead", exc)
            return None

    def _scan(self, shard: str) -> ShardIndex:
        local = self._files.local_path(shard)
        try:
            if local is not None:
                rows = index_shard(local)
            else:
                with self._files.open(shard) as fh:
                    rows = index_shard(fh, join(self.url, shard))
        except FileNotFoundError:
            raise DataError(join(self.url, shard), "shard listed in the manifest is missing") from None
        except (OSError, EOFError) as exc:
            raise DataError(join(self.url, shard), f"unreadable shard: {exc}") from None
        return ShardIndex.from_rows(rows)

    def read_raw(self, index: int) -> dict[str, Any]:
        shard, local = self.locate(index)
        entries = self._index(shard)
        if local >= len(entries):
            raise DataError(join(self.url, shard), f"holds {len(entries)} samples, manifest says more (sample {local})")
        key, spans, start, end = entries.members(local)
        block = self._files.read(shard, start, end - start)
        raw: dict[str, Any] = {"__key__": key, "__shard__": shard}
        for ext, offset, size in spans:
            raw[ext] = block[offset - start: offset - start + size]
        return raw

    def read(self, index: int, members: Collection[str] | None = None) -> dict[str, Any]:
        """Decoded sample: npy/json/txt members decoded, images still JPEG bytes. With `members`, only
        those are kept (and decoded): the loader skips what its transform never reads (e.g. meta.json)."""
        raw = self.read_raw(index)
        if members is not None:
            raw = {k: v for k, v in raw.items() if k in members or k.startswith("__")}
        return decode_sample(raw)
