"""Writing episodes as a LeRobotDataset v3.0 folder (huggingface/lerobot `lerobot-dataset-v3.mdx`).

Layout written (all episodes in one data file and one mp4 per camera, as LeRobot does until a file
reaches `data_files_size_in_mb` / `video_files_size_in_mb`):

    meta/info.json                       codebase_version v3.0, fps, features {dtype, shape, names}
    meta/tasks.parquet                   pandas frame, index = task text, column task_index
    meta/stats.json                      min / max / mean / std / count of state and action
    meta/episodes/chunk-000/file-000.parquet
        episode_index, tasks, length, data/{chunk,file}_index, dataset_{from,to}_index,
        videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}, stats/<feature>/*
    data/chunk-000/file-000.parquet      observation.state, action (fixed-size float32 lists),
                                         timestamp, frame_index, episode_index, index, task_index
    videos/<key>/chunk-000/file-000.mp4  h264 yuv420p, episodes back to back, frame i at i / fps

`timestamp` is float32 frame_index / fps, which LeRobot's sync check (1e-4 s) requires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.media.video import write_video

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


@dataclass(frozen=True)
class LeRobotEpisode:
    """One episode to write: camera key -> uint8 [T, H, W, 3], float32 state / action [T, D], task text."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    task: str


def _stats(values: np.ndarray) -> dict[str, list[float]]:
    v = np.asarray(values, np.float64)
    return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
            "std": v.std(0).tolist(), "count": [int(len(v))]}


def _features(episode: LeRobotEpisode, state_names: Sequence[str], action_names: Sequence[str],
              fps: int) -> dict[str, Any]:
    feats: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)},
        "action": {"dtype": "float32", "shape": [len(action_names)], "names": list(action_names)},
    }
    for key, frames in episode.images.items():
        h, w = frames.shape[1:3]
        feats[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                      "info": {"video.height": h, "video.width": w, "video.codec": "h264",
                               "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                               "video.channels": 3, "has_audio": False}}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


def _frame_table(episodes: Sequence[LeRobotEpisode], task_index: dict[str, int], fps: int) -> Any:  # noqa: ANN401
    """All frames as a pyarrow.Table with the HF `datasets` schema metadata LeRobot writes."""
    import pyarrow as pa

    lengths = [len(ep.state) for ep in episodes]
    state = np.concatenate([ep.state for ep in episodes]).astype(np.float32)
    action = np.concatenate([ep.action for ep in episodes]).astype(np.float32)
    frame_index = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    columns = {
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), state.shape[1]),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), action.shape[1]),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index),
        "episode_index": pa.array(np.repeat(np.arange(len(episodes)), lengths).astype(np.int64)),
        "index": pa.array(np.arange(len(state), dtype=np.int64)),
        "task_index": pa.array(np.repeat([task_index[ep.task] for ep in episodes], lengths).astype(np.int64)),
    }
    hf = {"observation.state": state.shape[1], "action": action.shape[1]}
    # pyarrow spells float32 "float"; HF `datasets` Value dtypes say "float32".
    features = {name: ({"feature": {"dtype": "float32", "_type": "Value"}, "length": hf[name], "_type": "Sequence"}
                       if name in hf else {"dtype": {"float": "float32"}.get(str(arr.type), str(arr.type)),
                                           "_type": "Value"})
                for name, arr in columns.items()}
    schema = pa.schema([(n, a.type) for n, a in columns.items()],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def _episode_rows(episodes: Sequence[LeRobotEpisode], fps: int) -> list[dict[str, Any]]:
    rows, start = [], 0
    for e, ep in enumerate(episodes):
        n = len(ep.state)
        row: dict[str, Any] = {"episode_index": e, "tasks": [ep.task], "length": n, "data/chunk_index": 0,
                               "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + n}
        for key in ep.images:
            col = f"videos/{key}/"
            row.update({col + "chunk_index": 0, col + "file_index": 0, col + "from_timestamp": start / fps,
                        col + "to_timestamp": (start + n) / fps})
        for name, values in (("observation.state", ep.state), ("action", ep.action)):
            row.update({f"stats/{name}/{k}": v for k, v in _stats(values).items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        rows.append(row)
        start += n
    return rows


def write_lerobot_v30(root: Path, episodes: Sequence[LeRobotEpisode], *, fps: int, robot_type: str,
                      state_names: Sequence[str], action_names: Sequence[str]) -> Path:
    """Write `episodes` (same cameras, state and action sizes) as a v3.0 dataset at `root`."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not episodes:
        raise ValueError("no episodes to write")
    tasks = list(dict.fromkeys(ep.task for ep in episodes))
    task_index = {t: i for i, t in enumerate(tasks)}
    total = sum(len(ep.state) for ep in episodes)
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes),
            "total_frames": total, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": _features(episodes[0], state_names, action_names, fps)}
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    pd.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(root / "meta/tasks.parquet")
    state = np.concatenate([ep.state for ep in episodes])
    action = np.concatenate([ep.action for ep in episodes])
    (root / "meta/stats.json").write_text(json.dumps({"observation.state": _stats(state), "action": _stats(action)}))
    episodes_file = root / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pa.Table.from_pylist(_episode_rows(episodes, fps)), episodes_file)
    data = root / DATA_PATH.format(chunk_index=0, file_index=0)
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_frame_table(episodes, task_index, fps), data)
    for key in episodes[0].images:
        frames = np.concatenate([ep.images[key] for ep in episodes])
        write_video(root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), frames, fps, crf=12)
    return root
