"""Write converted datasets (one, or a mixture's sources) as a LeRobotDataset v3.0 folder.

Layout, as LeRobot 0.4.4's own writer leaves it (`datasets/lerobot_dataset.py`, `datasets/utils.py`):
`meta/info.json`, `meta/stats.json`, `meta/tasks.parquet` (pandas frame, task string as index, column
`task_index`), `meta/episodes/chunk-000/file-000.parquet` (one row per episode: `episode_index, tasks,
length, data/{chunk,file}_index, dataset_{from,to}_index, stats/<feature>/<stat>,
meta/episodes/{chunk,file}_index`) and `data/chunk-CCC/file-FFF.parquet` frames (`observation.state`,
`action`, `observation.images.<camera>`, `timestamp, frame_index, episode_index, index, task_index`,
plus `source` for a mixture). Cameras are `image` features: cotrain's JPEG frames go into the
parquet's HF Image structs unchanged, so no frame is re-encoded and `cotrain convert lerobot` passes
them through again byte for byte.

A LeRobot frame holds one action; cotrain samples hold the chunk of the next H actions. The frame's
action is the chunk's first step, and the export checks that every chunk is exactly the episode's
next H actions (the last repeated past its end), which is what the LeRobot converter rebuilds, so
converting the export back with `--horizon H` gives the same state and action bytes. A dataset whose
chunks are something else (another source's own chunking) is refused rather than exported lossily.

A mixture's sources go into one dataset: state and action zero-padded to the widest source (their
per-source names in `info.json["cotrain"]`), cameras the union of the sources' (a black frame where a
source lacks one), a `source` column with the source's position in `info.json["cotrain"]["sources"]`.
The whole folder is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cotrain import keys
from cotrain.dataset import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.interop.lerobot_stats import ImageStats, numeric_stats
from cotrain.manifest import Manifest

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
DATA_FILE_MB = 100  # a new data file starts past this size, at an episode boundary (LeRobot's default)
IMAGE_STATS_FRAMES = 64  # frames per episode decoded for image stats, evenly spaced
STATE, ACTION, SOURCE, IMAGES = "observation.state", "action", "source", "observation.images."


@dataclass(frozen=True)
class ExportSource:
    """One converted dataset to export, under its mixture name."""

    name: str
    root: Path
    manifest: Manifest


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    sources: list[str]
    episodes: int
    frames: int
    tasks: int
    cameras: list[str]


@dataclass
class _Episode:
    """One episode's frames, ready to write (images as JPEG bytes per camera)."""

    source: int
    state: np.ndarray  # f32 [T, Ds]
    action: np.ndarray  # f32 [T, Da]
    tasks: list[str]
    images: dict[str, list[bytes]] = field(default_factory=dict)


def resolve_sources(path: Path) -> tuple[list[ExportSource], bool]:
    """The datasets behind `path` (a converted dataset folder or a mixture YAML) and whether it is a mixture."""
    if path.is_dir():
        return [ExportSource(path.name, path, Dataset.open(path).manifest)], False
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise ConfigError(f"{path}: not a converted dataset folder (with manifest.json) nor a mixture YAML")
    from cotrain.mix.resolve import load_mixture

    mixture = load_mixture(path)
    out = []
    for src in mixture.sources:
        if "://" in src.url:
            raise ConfigError(f"{path}: source {src.name!r} is at {src.url}; export reads local folders only "
                              f"(copy it locally first)")
        out.append(ExportSource(src.name, Path(src.url), src.manifest))
    return out, True


def export_lerobot_dataset(path: Path, out: Path, *, overwrite: bool = False) -> ExportSummary:
    """Export the dataset or mixture at `path` to the LeRobotDataset v3.0 folder `out` (atomic)."""
    sources, is_mixture = resolve_sources(path)
    layout = _Layout.build(sources, is_mixture, str(path))
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _Writer(tmp, layout).write(sources)
        if out.exists():
            old = out.with_name(out.name + f".old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportSummary(out, summary.sources, summary.episodes, summary.frames, summary.tasks, summary.cameras)


@dataclass(frozen=True)
class _Layout:
    """The exported dataset's shape: fps, padded dims, feature names and cameras with their sizes."""

    fps: float
    state_dim: int
    action_dim: int
    state_names: list[str]
    action_names: list[str]
    cameras: dict[str, tuple[int, int]]  # cotrain camera name -> (height, width)
    is_mixture: bool

    @classmethod
    def build(cls, sources: Sequence[ExportSource], is_mixture: bool, where: str) -> _Layout:
        for s in sources:
            if s.manifest.modality != keys.ROBOT:
                raise ConfigError(f"{where}: source {s.name!r} has modality {s.manifest.modality}; a LeRobot dataset "
                                  f"holds robot episodes only (export a mixture of robot sources)")
        rates = sorted({float(s.manifest.fps or 0) for s in sources})
        if len(rates) != 1 or rates[0] <= 0:
            raise ConfigError(f"{where}: sources have frame rates {rates}; a LeRobot dataset has one fps "
                              f"(convert them with the same --fps)")
        cameras: dict[str, tuple[int, int]] = {}
        for s in sources:
            for cam in s.manifest.cameras:
                cameras.setdefault(cam, _first_image_size(s, cam))
        return cls(rates[0], max(len(s.manifest.state_names) for s in sources),
                   max(len(s.manifest.action_names) for s in sources),
                   _shared_names([s.manifest.state_names for s in sources], "state"),
                   _shared_names([s.manifest.action_names for s in sources], "action"), cameras, is_mixture)

    def features(self) -> dict[str, dict[str, Any]]:
        feats: dict[str, dict[str, Any]] = {
            STATE: {"dtype": "float32", "shape": [self.state_dim], "names": self.state_names},
            ACTION: {"dtype": "float32", "shape": [self.action_dim], "names": self.action_names},
        }
        for cam, (h, w) in self.cameras.items():
            feats[IMAGES + cam] = {"dtype": "image", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
        if self.is_mixture:
            feats[SOURCE] = {"dtype": "int64", "shape": [1], "names": None}
        for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                            ("index", "int64"), ("task_index", "int64")):
            feats[name] = {"dtype": dtype, "shape": [1], "names": None}
        return feats


def _shared_names(lists: Sequence[Sequence[str]], prefix: str) -> list[str]:
    width = max(len(n) for n in lists)
    if all(list(n) == list(lists[0]) for n in lists):
        return list(lists[0])
    return [f"{prefix}_{i}" for i in range(width)]


def _first_image_size(source: ExportSource, camera: str) -> tuple[int, int]:
    member = keys.camera_member(camera)
    for sample in Dataset(source.root, source.manifest).iter_raw():
        if member in sample:
            return _jpeg_size(sample[member], source.root, sample["__key__"], member)
    raise DataError(source.root, f"camera {camera!r} is listed in the manifest but no sample holds it", key=member)


def _jpeg_size(data: bytes, root: Path, key: str, member: str) -> tuple[int, int]:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(root, f"sample {key}: undecodable image: {exc}", key=member) from None


def iter_episodes(source: ExportSource, index: int, layout: _Layout) -> Iterator[_Episode]:
    """The source's episodes in file order, each checked: frames 0..T-1 in order, chunks rebuildable."""
    current: list[dict[str, Any]] = []
    seen: set[int] = set()
    for sample in Dataset(source.root, source.manifest).iter_decoded():
        meta = sample.get(keys.META)
        if not isinstance(meta, dict) or not isinstance(meta.get("episode_index"), int):
            raise DataError(source.root, f"sample {sample['__key__']}: meta.json has no integer episode_index",
                            key=keys.META)
        if current and meta["episode_index"] != current[0][keys.META]["episode_index"]:
            yield _episode(source, index, layout, current, seen)
            current = []
        current.append(sample)
    if current:
        yield _episode(source, index, layout, current, seen)


def _episode(source: ExportSource, index: int, layout: _Layout, samples: list[dict[str, Any]],
             seen: set[int]) -> _Episode:
    meta = samples[0][keys.META]
    ep, where = meta["episode_index"], meta.get("episode", meta["episode_index"])
    if ep in seen:
        raise DataError(source.root, "episode's samples are not contiguous in the shards", episode=where)
    seen.add(ep)
    for i, smp in enumerate(samples):
        if smp[keys.META].get("frame_index") != i:
            got = smp[keys.META].get("frame_index")
            raise DataError(source.root, f"sample {smp['__key__']} has frame_index {got}, expected {i}: episodes "
                            "must hold every frame 0..T-1 in order", episode=where, frame=i)
        for member in (keys.STATE, keys.ACTIONS):
            if member not in smp:
                raise DataError(source.root, f"sample {smp['__key__']} has no {member}", episode=where, frame=i,
                                key=member)
    state = np.stack([smp[keys.STATE] for smp in samples]).astype(np.float32)
    chunks = np.stack([smp[keys.ACTIONS] for smp in samples]).astype(np.float32)
    action = chunks[:, 0]
    _check_chunks(chunks, action, source.root, where)
    images = {cam: [smp.get(keys.camera_member(cam)) for smp in samples] for cam in source.manifest.cameras}
    for cam, frames in images.items():
        for i, data in enumerate(frames):
            if not isinstance(data, bytes):
                raise DataError(source.root, "frame has no image of this camera", episode=where, frame=i,
                                key=keys.camera_member(cam))
            if _jpeg_size(data, source.root, samples[i]["__key__"], cam) != layout.cameras[cam]:
                raise DataError(source.root, f"image size differs from the camera's first frame "
                                f"{layout.cameras[cam]}; a LeRobot image feature has one shape", episode=where,
                                frame=i, key=keys.camera_member(cam))
    tasks = [str(smp.get(keys.INSTRUCTION) or smp[keys.META].get("task") or "") for smp in samples]
    return _Episode(index, _pad(state, layout.state_dim), _pad(action, layout.action_dim), tasks, images)


def _check_chunks(chunks: np.ndarray, action: np.ndarray, root: Path, episode: object) -> None:
    """Every chunk [H, Da] must be actions t..t+H-1 of the episode, the last repeated past its end."""
    t, h = chunks.shape[0], chunks.shape[1]
    expected = action[np.minimum(np.arange(t)[:, None] + np.arange(h)[None, :], t - 1)]
    bad = np.flatnonzero(~np.all(chunks.view(np.uint32) == expected.view(np.uint32), axis=(1, 2)))
    if len(bad):
        raise DataError(root, f"the action chunk is not the episode's next {h} actions; a LeRobot frame holds one "
                        f"action, so exporting would lose the chunk", episode=episode, frame=int(bad[0]),
                        key=keys.ACTIONS)


def _pad(values: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(values), width), np.float32)
    out[:, : values.shape[1]] = values
    return out


class _Writer:
    """Streams episodes into data files and collects the metadata written at the end."""

    def __init__(self, root: Path, layout: _Layout) -> None:
        self.root, self.layout = root, layout
        self.features = layout.features()
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self.frames = 0
        self.file_index, self.file_bytes = 0, 0
        self.writer: Any = None
        self.blank = {cam: _blank_jpeg(hw) for cam, hw in layout.cameras.items()}
        self.numeric: dict[str, list[np.ndarray]] = {STATE: [], ACTION: [], SOURCE: []}
        self.image_stats = {cam: ImageStats() for cam in layout.cameras}

    def write(self, sources: Sequence[ExportSource]) -> ExportSummary:
        self.root.mkdir(parents=True)
        try:
            for s, source in enumerate(sources):
                for episode in iter_episodes(source, s, self.layout):
                    self._write_episode(episode)
        finally:
            if self.writer is not None:
                self.writer.close()
        if not self.episode_rows:
            raise DataError(sources[0].root, "no episodes to export")
        self._write_meta(sources)
        return ExportSummary(self.root, [s.name for s in sources], len(self.episode_rows), self.frames,
                             len(self.tasks), list(self.layout.cameras))

    def _write_episode(self, ep: _Episode) -> None:
        import pyarrow as pa

        t, e = len(ep.state), len(self.episode_rows)
        task_index = np.asarray([self.tasks.setdefault(task, len(self.tasks)) for task in ep.tasks], np.int64)
        columns: dict[str, Any] = {
            STATE: _fixed_list(ep.state), ACTION: _fixed_list(ep.action),
        }
        for cam in self.layout.cameras:
            frames = ep.images.get(cam) or [self.blank[cam]] * t
            columns[IMAGES + cam] = pa.StructArray.from_arrays(
                [pa.array(frames, pa.binary()), pa.nulls(t, pa.string())], names=["bytes", "path"])
            self._image_stats(cam, frames)
        if self.layout.is_mixture:
            columns[SOURCE] = pa.array(np.full(t, ep.source, np.int64))
        columns["timestamp"] = pa.array((np.arange(t) / self.layout.fps).astype(np.float32))
        columns["frame_index"] = pa.array(np.arange(t, dtype=np.int64))
        columns["episode_index"] = pa.array(np.full(t, e, np.int64))
        columns["index"] = pa.array(np.arange(self.frames, self.frames + t, dtype=np.int64))
        columns["task_index"] = pa.array(task_index)
        table = pa.table(columns)
        self._next_file_if_full()
        if self.writer is None:
            self._open_file(table.schema)
        self.writer.write_table(table)
        self.file_bytes += table.nbytes
        self.numeric[STATE].append(ep.state)
        self.numeric[ACTION].append(ep.action)
        self.numeric[SOURCE].append(np.full((t, 1), ep.source, np.int64))
        self.episode_rows.append(self._episode_row(e, t, list(dict.fromkeys(ep.tasks)), ep))
        self.frames += t

    def _image_stats(self, cam: str, frames: Sequence[bytes]) -> None:
        from cotrain.imaging import decode_image

        for i in np.unique(np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STATS_FRAMES)).astype(int)):
            self.image_stats[cam].add(decode_image(frames[i]))

    def _next_file_if_full(self) -> None:
        if self.writer is not None and self.file_bytes >= DATA_FILE_MB * 1024 * 1024:
            self.writer.close()
            self.writer, self.file_index, self.file_bytes = None, self.file_index + 1, 0

    def _open_file(self, schema: Any) -> None:  # noqa: ANN401  (pyarrow.Schema)
        import pyarrow.parquet as pq

        hf = {"info": {"features": _hf_features(self.features)}}
        schema = schema.with_metadata({b"huggingface": json.dumps(hf).encode()})
        path = self.root / self._data_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, schema)

    def _data_path(self) -> str:
        return DATA_PATH.format(chunk_index=self.file_index // CHUNKS_SIZE, file_index=self.file_index % CHUNKS_SIZE)

    def _episode_row(self, e: int, t: int, tasks: list[str], ep: _Episode) -> dict[str, Any]:
        row: dict[str, Any] = {
            "episode_index": e, "tasks": tasks, "length": t,
            "data/chunk_index": self.file_index // CHUNKS_SIZE, "data/file_index": self.file_index % CHUNKS_SIZE,
            "dataset_from_index": self.frames, "dataset_to_index": self.frames + t,
        }
        for key, values in ((STATE, ep.state), (ACTION, ep.action)):
            for stat, value in numeric_stats(values).items():
                row[f"stats/{key}/{stat}"] = value
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        return row

    def _write_meta(self, sources: Sequence[ExportSource]) -> None:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self.root / "meta"
        (meta / "episodes/chunk-000").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), self.root / EPISODES_FILE)
        pd.DataFrame({"task_index": range(len(self.tasks))}, index=list(self.tasks)).to_parquet(meta / "tasks.parquet")
        stats = {key: numeric_stats(np.concatenate(values)) for key, values in self.numeric.items()
                 if key != SOURCE or self.layout.is_mixture}
        stats.update({IMAGES + cam: st.to_json() for cam, st in self.image_stats.items()})
        (meta / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
        (meta / "info.json").write_text(json.dumps(self._info(sources), indent=1), encoding="utf-8")

    def _info(self, sources: Sequence[ExportSource]) -> dict[str, Any]:
        fps = self.layout.fps
        embodiments = sorted({s.manifest.embodiment or "" for s in sources})
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": embodiments[0] if len(embodiments) == 1 and embodiments[0] else None,
            "total_episodes": len(self.episode_rows), "total_frames": self.frames, "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": 200,
            "fps": int(fps) if float(fps).is_integer() else fps,
            "splits": {"train": f"0:{len(self.episode_rows)}"},
            "data_path": DATA_PATH, "video_path": None,
            "features": self.features,
            "cotrain": {"sources": [
                {"name": s.name, "dataset": s.manifest.name, "embodiment": s.manifest.embodiment,
                 "state_names": s.manifest.state_names, "action_names": s.manifest.action_names,
                 "horizon": s.manifest.horizon, "cameras": s.manifest.cameras} for s in sources]},
        }


def _fixed_list(values: np.ndarray) -> Any:  # noqa: ANN401  (pyarrow.FixedSizeListArray)
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])


def _hf_features(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `datasets` feature description LeRobot's writer stores in the parquet schema metadata."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
    return out


def _blank_jpeg(hw: tuple[int, int]) -> bytes:
    from cotrain.imaging import encode_jpeg

    return encode_jpeg(np.zeros((*hw, 3), np.uint8))
