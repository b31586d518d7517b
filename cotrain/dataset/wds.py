"""A converted dataset as a `webdataset` pipeline, for users who build their own `wds` input pipelines.

`open_wds(url)` returns a `wds.FluidWrapper` (the `wds.DataPipeline` with the fluid `.shuffle`,
`.batched`, `.map`, `.to_tuple` ... methods that `wds.WebDataset` has) whose stages are:

1. the shard URLs the manifest lists, in manifest order (other files in the folder are never read);
2. `wds.split_by_node` and `wds.split_by_worker` (or the splitters given): ranks and DataLoader
   workers read disjoint shards, the way every wds pipeline splits;
3. optionally `wds.detshuffle` of the shard order (seeded: determinism is API);
4. cotrain's own sequential tar reader (`shards.iter_samples`) on a stream opened through cotrain's
   storage layer, so `s3://`/`gs://` URLs take the same `StorageOptions` as the loader. wds's tar
   expander is not used: it skips link members and passes `.pyd`/`.pickle` members on, where
   cotrain's reader refuses both with a DataError naming the shard;
5. cotrain's decoding as a `.map`: `.npy` without pickle, `.json`, `.txt`, and JPEG cameras through
   `cotrain.media.image` (to [H, W, 3] uint8, or left as bytes with `images="jpeg"`).

Each sample is a dict `{"__key__", "__url__", member: value, ...}`, equal (members and key) to what
`SourceReader.read` / `Dataset.iter_decoded` give for the same sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import webdataset as wds

from cotrain.dataset.keys import IMAGE_EXT
from cotrain.dataset.shards import decode_member, iter_samples
from cotrain.dataset.storage import StorageOptions, filesystem, is_url, join, read_manifest
from cotrain.errors import DataError
from cotrain.media.image import decode_image

ImageMode = Literal["rgb", "jpeg"]
Splitter = Callable[[Iterable[dict[str, str]]], Iterator[dict[str, str]]]


def shard_urls(dataset: str | Path, storage_options: StorageOptions | None = None) -> list[str]:
    """The dataset's shards as URLs (or local paths), exactly those its manifest lists, in its order."""
    root = str(dataset)
    manifest = read_manifest(root, storage_options)
    if not is_url(root):
        return [str(Path(root) / s.name) for s in manifest.shards]
    return [join(root, s.name) for s in manifest.shards]


def open_wds(dataset: str | Path, *, storage_options: StorageOptions | None = None,
             nodesplitter: Splitter | None = wds.split_by_node, workersplitter: Splitter | None = wds.split_by_worker,
             shard_shuffle_seed: int | None = None, images: ImageMode = "rgb",
             handler: Callable[[BaseException], bool] = wds.reraise_exception) -> wds.FluidWrapper:
    """A `webdataset` pipeline over a converted dataset's shards, with cotrain's decoding.

    Args:
        dataset: the dataset folder (local path) or its fsspec URL (`s3://bucket/ds`).
        storage_options: credentials/endpoint for object-storage URLs (as in a mixture source).
        nodesplitter: splits the shard list across ranks (`RANK`/`WORLD_SIZE` or torch.distributed);
            None reads every shard on every rank.
        workersplitter: splits it across DataLoader workers; None reads every shard in every worker.
        shard_shuffle_seed: shuffle the shard order with `wds.detshuffle` under this seed (the same
            order on every rank, so the split stays disjoint); None keeps the manifest's order.
        images: `"rgb"` decodes `*.jpg` camera members to [H, W, 3] uint8 arrays, `"jpeg"` keeps bytes.
        handler: wds's error handler for the decoding stage (`wds.reraise_exception` by default: a
            damaged sample is a DataError naming the shard, sample and member).
    """
    if images not in ("rgb", "jpeg"):
        raise ValueError(f"images={images!r}: expected 'rgb' (decode JPEG) or 'jpeg' (keep bytes)")
    urls = shard_urls(dataset, storage_options)
    stages: list[Any] = [wds.SimpleShardList(urls)]
    stages += [s for s in (nodesplitter, workersplitter) if s is not None]
    if shard_shuffle_seed is not None:
        stages.append(wds.detshuffle(bufsize=len(urls), seed=shard_shuffle_seed))
    stages.append(_reader(str(dataset), storage_options))
    stages.append(wds.map(_decoder(images), handler=handler))
    pipeline = wds.FluidWrapper(stages[0])
    for stage in stages[1:]:
        pipeline.append(stage)
    return pipeline


Stage = Callable[[Iterable[dict[str, str]]], Iterator[dict[str, Any]]]


def _reader(dataset: str, options: StorageOptions | None) -> Stage:
    """The pipeline stage from `{"url": shard}` items to raw samples, read by cotrain's tar reader."""
    remote = is_url(dataset) or options is not None

    def read(items: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
        fs = filesystem(dataset, options)[0] if remote else None
        for item in items:
            url = item["url"]
            with _open(fs, url) as stream:
                for sample in iter_samples(stream, where=url):
                    yield {**sample, "__url__": url}

    return read


def _open(fs: Any, url: str) -> Any:
    try:
        return fs.open(url, "rb") if fs is not None else open(url, "rb")
    except FileNotFoundError:
        raise DataError(url, "shard listed in the manifest is missing") from None
    except OSError as exc:
        raise DataError(url, f"unreadable shard: {exc}") from None


def _decoder(images: ImageMode) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def decode(raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if name.startswith("__"):
                out[name] = value
                continue
            try:
                if images == "rgb" and name.endswith(IMAGE_EXT):
                    out[name] = decode_image(value)
                else:
                    out[name] = decode_member(name, value)
            except (ValueError, OSError) as exc:  # PIL raises OSError subclasses for a damaged image
                problem = str(exc) if str(exc).startswith(f"member {name}") else f"member {name}: {exc}"
                raise DataError(raw.get("__url__", "?"), f"sample {raw['__key__']!r}, {problem}", key=name) from None
        return out

    return decode
