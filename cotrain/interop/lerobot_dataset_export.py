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

A LeRobot frame holds one action: the first step of the cotrain sample's action chunk, after
`lerobot_episodes.iter_episodes` checked that the chunks are what `cotrain convert lerobot --horizon H`
rebuilds, so converting the export back gives the same state and action bytes.

A mixture's sources go into one dataset: state and action zero-padded to the widest source (their
per-source names in `info.json["cotrain"]`), cameras the union of the sources' (a black frame where a
source lacks one), a `source` column with the source's position in `info.json["cotrain"]["sources"]`.
The whole folder is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.errors import ConfigError, DataError
from cotrain.interop.lerobot_episodes import (
    ACTION,
    IMAGES,
    SOURCE,
    STATE,
    Episode,
    ExportLayout,
    ExportSource,
    iter_episodes,
    resolve_sources,
)
from cotrain.interop.lerobot_stats import ImageStats, numeric_stats

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
DATA_FILE_MB = 100  # a new data file starts past this size, at an episode boundary (LeRobot's default)
IMAGE_STATS_FRAMES = 64  # frames per episode decoded for image stats, evenly spaced


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the output folder, its sources and its episode count."""

    out: Path
    sources: list[str]
    episodes: int
    frames: int
    tasks: int
    cameras: list[str]


def export_lerobot_dataset(path: Path, out: Path, *, overwrite: bool = False) -> ExportSummary:
    """Export the dataset or mixture at `path` to the LeRobotDataset v3.0 folder `out` (atomic)."""
    sources, is_mixture = resolve_sources(path)
    layout = ExportLayout.build(sources, is_mixture, str(path))
    _check_out(out, sources, overwrite)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _Writer(tmp, layout).write(sources)
        if out.exists():  # --overwrite: the old folder is moved aside first, so OUT is never half-written
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


def _check_out(out: Path, sources: Sequence[ExportSource], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another OUT")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    target = out.resolve()
    for s in sources:
        root = s.root.resolve()
        if target == root or target in root.parents or root in target.parents:
            raise ConfigError(f"{out} overlaps source {s.name!r} at {s.root}; write the export elsewhere")


class _Writer:
    """Streams episodes into data files and collects the metadata written at the end."""

    def __init__(self, root: Path, layout: ExportLayout) -> None:
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

    def _write_episode(self, ep: Episode) -> None:
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
        from cotrain.media.image import decode_image

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

    def _episode_row(self, e: int, t: int, tasks: list[str], ep: Episode) -> dict[str, Any]:
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
    from cotrain.media.image import encode_jpeg

    return encode_jpeg(np.zeros((*hw, 3), np.uint8))
