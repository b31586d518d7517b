"""LeRobotDataset metadata: format version, features, episodes, tasks and file paths (v2.1 and v3.0).

Layout (huggingface/lerobot `datasets/utils.py`, `docs/source/lerobot-dataset-v3.mdx`):
- `meta/info.json`: `codebase_version`, `fps`, `chunks_size`, the `data_path` / `video_path` templates
  and `features[key] = {dtype, shape, names}`; dtype `video` is an mp4 per camera, dtype `image` an
  HF Image struct `{bytes, path}` stored inline in the frame parquet.
- v2.1, one episode per file: `meta/episodes.jsonl` lines `{episode_index, tasks, length}`,
  `meta/tasks.jsonl` lines `{task_index, task}`, frames in `data/chunk-{c:03d}/episode_{e:06d}.parquet`,
  video in `videos/chunk-{c:03d}/{key}/episode_{e:06d}.mp4`, with c = e // chunks_size.
- v3.0, many episodes per file: `meta/episodes/chunk-*/file-*.parquet` rows hold `length`,
  `data/{chunk,file}_index` and per camera `videos/{key}/{chunk_index,file_index,from_timestamp,
  to_timestamp}` (seconds inside the concatenated mp4); `meta/tasks.parquet` is a pandas frame whose
  index is the task string, with one column `task_index`.
- v3.1: the v3.0 layout plus the language columns below (features of dtype `language`).
This module reads metadata only; it never opens a frame parquet or a video.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotrain.convert.jsonl import iter_jsonl
from cotrain.errors import DataError, suggest

SUPPORTED_VERSIONS = ("v2.1", "v3.0", "v3.1")
# v3.1 (lerobot `datasets/language.py`, written by `lerobot-annotate`) keeps v3.0's files and adds two
# frame columns of dtype "language": `language_persistent` (rows {role, content, style, timestamp,
# camera, tool_calls} repeated on every frame of an episode) and `language_events` (rows on the frame
# they fire at); the annotation writer drops `subtask_index`.
LANGUAGE_DTYPE = "language"
INFO_PATH = "meta/info.json"
CAMERA_DTYPES = ("video", "image")
_V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V30_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V30_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


@dataclass(frozen=True)
class VideoSpan:
    """Where one camera's frames of one episode are: a file (relative to the root) and its time range.

    `to_s` is None for v2.1, whose per-episode files hold exactly one episode.
    """

    file: str
    from_s: float = 0.0
    to_s: float | None = None


@dataclass(frozen=True)
class EpisodeEntry:
    """One episode as listed in the metadata (`meta_file`: the file listing it, for error messages)."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: str
    videos: Mapping[str, VideoSpan] = field(default_factory=dict)
    meta_file: str = ""


@dataclass(frozen=True)
class LeRobotMeta:
    """The parsed `meta/info.json` of one dataset."""

    root: Path
    version: str
    fps: float
    features: Mapping[str, Mapping[str, Any]]
    info: Mapping[str, Any]

    @property
    def info_file(self) -> Path:
        return self.root / INFO_PATH

    @property
    def cameras(self) -> list[str]:
        """Camera feature keys (video and inline image), in info.json order."""
        return [k for k, f in self.features.items() if f.get("dtype") in CAMERA_DTYPES]

    @property
    def many_episodes_per_file(self) -> bool:
        """v3.x: frame parquets and videos hold many episodes (v2.1: one each)."""
        return self.version != "v2.1"

    @property
    def language_columns(self) -> list[str]:
        """v3.1 language columns (read by `cotrain annotate --from`, not by the robot converter)."""
        return [k for k, f in self.features.items() if f.get("dtype") == LANGUAGE_DTYPE]

    def is_video(self, key: str) -> bool:
        return self.features[key].get("dtype") == "video"

    def video_fps(self, key: str) -> float:
        info = self.features[key].get("info") or {}
        return float(info.get("video.fps") or self.fps)

    def require(self, key: str, option: str) -> None:
        """A DataError naming info.json when `key` is not a feature (with the close match and the option)."""
        if key not in self.features:
            names = list(self.features)
            raise DataError(self.info_file, f"no feature {key!r}{suggest(key, names)}; features: {', '.join(names)}; "
                            f"choose another with {option}", key=key)

    def dims(self, key: str) -> int:
        dims = 1
        for n in self.features[key].get("shape") or [1]:
            dims *= int(n)
        return dims

    def names(self, key: str, prefix: str) -> list[str]:
        """Per-dimension names from `features[key]["names"]` (a list, or a dict such as
        {"motors": [...]} whose lists are joined in order); generated `prefix_i` when absent or when
        their count does not match the shape."""
        raw = self.features[key].get("names")
        flat = _flatten_names(raw)
        dims = self.dims(key)
        return flat if len(flat) == dims else [f"{prefix}_{i}" for i in range(dims)]


def _flatten_names(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Mapping):
        return [n for value in raw.values() for n in _flatten_names(value)]
    if isinstance(raw, Sequence):
        return [n for value in raw for n in _flatten_names(value)]
    return []


def load_meta(root: Path) -> LeRobotMeta:
    """Read and check `meta/info.json`; an unknown `codebase_version` is a DataError."""
    path = root / INFO_PATH
    if not path.is_file():
        raise DataError(path, "missing: not a LeRobotDataset folder (expected meta/info.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable JSON: {exc}") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version not in SUPPORTED_VERSIONS:
        raise DataError(path, f"unknown format version {version}; supported {', '.join(SUPPORTED_VERSIONS)}",
                        key="codebase_version")
    fps, features = info.get("fps"), info.get("features")
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise DataError(path, f"fps must be a positive number, got {fps!r}", key="fps")
    if not isinstance(features, dict) or not features:
        raise DataError(path, "features must be a non-empty object", key="features")
    return LeRobotMeta(root=root, version=version, fps=float(fps), features=features, info=info)


def _template(meta: LeRobotMeta, name: str, default: str, **values: object) -> str:
    text = meta.info.get(name) or default
    try:
        return str(text).format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(meta.info_file, f"{name} template {text!r} cannot be filled: {exc!r}", key=name) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(path, "missing (required by LeRobotDataset v2.1)")
    return [row for _, row in iter_jsonl(path)]


def _int_field(row: Mapping[str, Any], name: str, path: Path, where: str) -> int:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(path, f"{where}: {name} must be a non-negative integer, got {value!r}", key=name)
    return value


def load_episodes(meta: LeRobotMeta) -> list[EpisodeEntry]:
    """All episodes, sorted by episode_index."""
    episodes = sorted(_episodes_v21(meta) if meta.version == "v2.1" else _episodes_v30(meta), key=lambda e: e.index)
    for a, b in zip(episodes, episodes[1:]):
        if a.index == b.index:
            raise DataError(b.meta_file, f"episode_index {a.index} is listed twice", episode=a.index)
    return episodes


def _episodes_v21(meta: LeRobotMeta) -> list[EpisodeEntry]:
    path = meta.root / "meta/episodes.jsonl"
    chunks_size = int(meta.info.get("chunks_size") or 1000)
    out = []
    for n, row in enumerate(_read_jsonl(path), start=1):
        e = _int_field(row, "episode_index", path, f"line {n}")
        chunk = e // chunks_size
        data = _template(meta, "data_path", _V21_DATA, episode_chunk=chunk, episode_index=e)
        videos = {key: VideoSpan(_template(meta, "video_path", _V21_VIDEO, episode_chunk=chunk, video_key=key,
                                           episode_index=e))
                  for key in meta.cameras if meta.is_video(key)}
        out.append(EpisodeEntry(e, _int_field(row, "length", path, f"line {n}"), tuple(row.get("tasks") or ()),
                                data, videos, str(path)))
    return out


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> Any:  # noqa: ANN401  (pyarrow.Table)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"unreadable parquet file: {exc}") from None


def _episodes_v30(meta: LeRobotMeta) -> list[EpisodeEntry]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((meta.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DataError(meta.root / "meta/episodes", "no chunk-*/file-*.parquet episode files (LeRobotDataset v3.0)")
    video_keys = [k for k in meta.cameras if meta.is_video(k)]
    needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    needed += [f"videos/{k}/{c}" for k in video_keys for c in ("chunk_index", "file_index", "from_timestamp",
                                                                "to_timestamp")]
    out: list[EpisodeEntry] = []
    for path in files:
        try:
            names = set(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(path, f"unreadable parquet file: {exc}") from None
        missing = [c for c in needed if c not in names]
        if missing:
            raise DataError(path, f"missing column {missing[0]!r} of the v3.0 episode table", key=missing[0])
        rows = _read_parquet(path, needed + (["tasks"] if "tasks" in names else [])).to_pylist()
        out.extend(_entry_v30(meta, row, video_keys, path) for row in rows)
    return out


def _entry_v30(meta: LeRobotMeta, row: Mapping[str, Any], video_keys: Sequence[str], path: Path) -> EpisodeEntry:
    data = _template(meta, "data_path", _V30_DATA, chunk_index=row["data/chunk_index"],
                     file_index=row["data/file_index"])
    videos = {}
    for key in video_keys:
        col = f"videos/{key}/"
        file = _template(meta, "video_path", _V30_VIDEO, video_key=key, chunk_index=row[col + "chunk_index"],
                         file_index=row[col + "file_index"])
        videos[key] = VideoSpan(file, float(row[col + "from_timestamp"]), float(row[col + "to_timestamp"]))
    return EpisodeEntry(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data, videos,
                        str(path))


def load_tasks(meta: LeRobotMeta) -> dict[int, str]:
    """task_index -> task text."""
    if meta.version == "v2.1":
        path = meta.root / "meta/tasks.jsonl"
        return {_int_field(r, "task_index", path, f"task {r!r}"): str(r.get("task", "")) for r in _read_jsonl(path)}
    path = meta.root / "meta/tasks.parquet"
    if not path.is_file():
        raise DataError(path, "missing (required by LeRobotDataset v3.0)")
    table = _read_parquet(path)
    text_col = _task_text_column(table)
    if "task_index" not in table.column_names or text_col is None:
        raise DataError(path, f"expected a task_index column and the task text as index or 'task' column; "
                        f"columns: {', '.join(table.column_names)}")
    return dict(zip((int(i) for i in table.column("task_index").to_pylist()),
                    (str(t) for t in table.column(text_col).to_pylist())))


def _task_text_column(table: Any) -> str | None:  # noqa: ANN401  (pyarrow.Table)
    # pandas stores the frame's index as a column named in its schema metadata: `__index_level_0__`
    # when unnamed (as LeRobot writes it), or the index name (`task`) when named.
    if "task" in table.column_names:
        return "task"
    pandas_meta = (table.schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        for col in json.loads(pandas_meta).get("index_columns", []):
            if isinstance(col, str) and col in table.column_names:
                return col
    return "__index_level_0__" if "__index_level_0__" in table.column_names else None
