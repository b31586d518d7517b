"""The loader benchmark's data and its pipelines: cotrain's MixtureLoader and the peers it is measured against.

Every pipeline decodes a sample exactly as the floor does (`decode_member`): each camera JPEG through
cotrain's own `letterbox_jpeg` to side x side, each `.npy` through `cotrain.dataset.shards.decode_npy` (a
regex header parse, np.load(allow_pickle=False) for unusual headers), JSON through `json.loads`, text
as UTF-8. The peers batch with `stack_collate` (images stacked into one
uint8 tensor, the rest as lists), the least a trainer needs; MixtureLoader's collator does more
(normalisation, padding to fixed shapes), so the comparison does not favour it.

Data: 3 robot sources written with tests/fixtures/cotrain_data.py `write_dataset` (different state
and action sizes, as in cross-embodiment co-training). That writer draws flat one-colour images,
which decode unrealistically fast, so while it runs its JPEG encoder is swapped for one that encodes
a textured camera-like frame (a gradient scene, texture, a moving object and sensor noise).
The same samples are exported to parquet for HF datasets: image bytes as binary, arrays as lists.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch.utils.data as tud
from common import import_fixtures

from cotrain.dataset import shards
from cotrain.mix.transform import letterbox_jpeg

BATCH = 32
# name, state dim, action dim, horizon, mixture weight
SOURCES = (("target", 8, 7, 16, 0.5), ("xemb", 14, 14, 16, 0.3), ("third", 7, 7, 10, 0.2))
WEIGHTS = tuple(s[4] for s in SOURCES)
CAMERA = "front"


# --- data -------------------------------------------------------------------------------------------


def textured_image(i: int, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = 80 + 50 * np.sin((xx + 3 * i) / 9) * np.cos(yy / 13) + 0.3 * xx + 0.2 * yy
    img = np.stack([scene, scene * 0.85 + 25, scene * 0.6 + 50], axis=-1)
    cy, cx = h * (0.5 + 0.3 * np.sin(i / 7)), w * (0.5 + 0.3 * np.cos(i / 5))
    img[((yy - cy) ** 2 + (xx - cx) ** 2) < (min(h, w) / 7) ** 2] = (210, 70, 40)
    noise = np.random.default_rng(i).normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _textured_encoder(offset: int) -> Any:
    from cotrain.media.image import encode_jpeg

    counter = itertools.count(offset)

    def encode(img: np.ndarray, quality: int = 90) -> bytes:
        return encode_jpeg(textured_image(next(counter), img.shape[:2]), quality)

    return encode


def write_sources(root: Path, samples: int, per_shard: int, side: int) -> list[Path]:
    import_fixtures()
    from tests.fixtures import cotrain_data

    paths = []
    for tag, (name, ds, da, horizon, _) in enumerate(SOURCES):
        with mock.patch.object(cotrain_data, "encode_jpeg", _textured_encoder(tag * 1_000_000)):
            paths.append(cotrain_data.write_dataset(
                root / name, samples=samples, per_shard=per_shard, state_dim=ds, action_dim=da, horizon=horizon,
                cameras=(CAMERA,), tag=float(tag), embodiment=name, image_hw=(side, side)))
    return paths


def write_mixture(root: Path, side: int) -> Path:
    import yaml

    spec = {"name": "bench", "seed": 0, "batch_size": BATCH, "image_size": side,
            "sources": {name: {"path": str(root / name)} for name, *_ in SOURCES},
            "phases": [{"name": "main", "steps": 1_000_000, "weights": {s[0]: s[4] for s in SOURCES}}]}
    path = root / "mixture.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def export_parquet(root: Path, files_per_source: int) -> None:
    """Each source's samples as parquet files (`<source>/parquet/part-*.parquet`), one row per sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotrain.dataset.shards import decode_npy, iter_samples

    for name, *_ in SOURCES:
        rows = [s for shard in sorted((root / name).glob("shard-*.tar")) for s in iter_samples(shard)]
        out = root / name / "parquet"
        out.mkdir(exist_ok=True)
        per_file = -(-len(rows) // files_per_source)
        for f in range(files_per_source):
            part = rows[f * per_file: (f + 1) * per_file]
            table = pa.table({
                "__key__": [r["__key__"] for r in part],
                f"{CAMERA}.jpg": pa.array([r[f"{CAMERA}.jpg"] for r in part], pa.binary()),
                "state.npy": [decode_npy(r["state.npy"]).tolist() for r in part],
                "actions.npy": [decode_npy(r["actions.npy"]).tolist() for r in part],
                "actions_valid.npy": [decode_npy(r["actions_valid.npy"]).tolist() for r in part],
                "meta.json": [r["meta.json"].decode() for r in part],
                "instruction.txt": [r["instruction.txt"].decode() for r in part],
            })
            pq.write_table(table, out / f"part-{f:03d}.parquet")


# --- the shared decoding ----------------------------------------------------------------------------


def decode_member(ext: str, data: bytes, side: int) -> Any:
    """What every variant does per member (cotrain.dataset.shards.decode_member + letterbox for images)."""
    if ext.rsplit(".", 1)[-1] == "jpg":
        return letterbox_jpeg(data, side)
    return shards.decode_member(ext, data)


def decode_raw(raw: dict[str, Any], side: int) -> dict[str, Any]:
    return {k: (v if k.startswith("__") else decode_member(k, v, side)) for k, v in raw.items()}


def stack_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"images": torch.from_numpy(np.stack([s[f"{CAMERA}.jpg"] for s in samples])),
                           "source": torch.tensor([s["source"] for s in samples])}
    for k in ("state.npy", "actions.npy", "actions_valid.npy", "meta.json", "instruction.txt"):
        out[k] = [s[k] for s in samples]
    return out


# --- (a) webdataset, (c) webdataset RandomMix -------------------------------------------------------


def _wds_handler(key: str, data: bytes, side: int) -> Any:
    return decode_member(key.lstrip("."), data, side)


def _tag(sample: dict[str, Any], source: int) -> dict[str, Any]:
    sample["source"] = source
    return sample


def wds_source(root: Path, source: int, side: int) -> Any:
    import webdataset as wds

    urls = [str(p) for p in sorted((root / SOURCES[source][0]).glob("shard-*.tar"))]
    # No shuffling: the cheapest raw read order, so the baseline is as fast as webdataset gets.
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return ds.decode(partial(_wds_handler, side=side)).map(partial(_tag, source=source)).repeat()


class SeededRandomMix(tud.IterableDataset):
    """wds.RandomMix over the sources; it draws from the global `random` module, seeded per worker here
    so that runs repeat."""

    def __init__(self, root: Path, side: int) -> None:
        self.root, self.side = root, side

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        info = tud.get_worker_info()
        random.seed(1000 + (info.id if info else 0))
        mix = wds.RandomMix([wds_source(self.root, i, self.side) for i in range(len(SOURCES))], list(WEIGHTS))
        return iter(mix)


# --- (d) HF datasets interleave_datasets ------------------------------------------------------------


def _hf_decode(row: dict[str, Any], side: int) -> dict[str, Any]:
    return {"__key__": row["__key__"], f"{CAMERA}.jpg": letterbox_jpeg(row[f"{CAMERA}.jpg"], side),
            "state.npy": np.asarray(row["state.npy"], np.float32),
            "actions.npy": np.asarray(row["actions.npy"], np.float32),
            "actions_valid.npy": np.asarray(row["actions_valid.npy"], bool),
            "meta.json": json.loads(row["meta.json"]), "instruction.txt": row["instruction.txt"],
            "source": row["source"]}


def _hf_tag(row: dict[str, Any], source: int) -> dict[str, Any]:
    return {**row, "source": source}


def hf_mixture(root: Path, side: int) -> Any:
    from datasets import interleave_datasets, load_dataset

    parts = []
    for i, (name, *_) in enumerate(SOURCES):
        files = [str(p) for p in sorted((root / name / "parquet").glob("*.parquet"))]
        ds = load_dataset("parquet", data_files={"train": files}, split="train", streaming=True)
        parts.append(ds.map(partial(_hf_tag, source=i)).repeat(None))
    mixed = interleave_datasets(parts, probabilities=list(WEIGHTS), seed=0, stopping_strategy="first_exhausted")
    return mixed.map(partial(_hf_decode, side=side))


# --- (b) cotrain MixtureLoader and (e) the floor ----------------------------------------------------


def mixture_loader(root: Path, workers: int) -> Any:
    from cotrain.mix.loader import MixtureLoader
    from cotrain.mix.resolve import load_mixture

    return MixtureLoader(load_mixture(root / "mixture.yaml"), num_workers=workers)


def plan_sequence(root: Path, start_step: int, steps: int) -> list[tuple[int, int]]:
    """(source, sample index) of every slot of steps [start_step, start_step + steps), in order."""
    from cotrain.mix.loader import build_planner
    from cotrain.mix.resolve import load_mixture

    planner = build_planner(load_mixture(root / "mixture.yaml"))
    return [(s.source, s.index) for step in range(start_step, start_step + steps) for s in planner.batch(step)]


def load_raw(root: Path, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], dict[str, bytes]]:
    """The raw member bytes of the wanted samples, read into memory (before the floor's clock starts)."""
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.reader import SourceReader

    need = set(wanted)
    readers = [SourceReader(str(root / name), load_manifest(root / name)) for name, *_ in SOURCES]
    return {(s, i): {k: v for k, v in readers[s].read_raw(i).items() if k != "__shard__"} for s, i in sorted(need)}
