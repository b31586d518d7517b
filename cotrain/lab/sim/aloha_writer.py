"""Writing robot recordings as ALOHA / ACT episode HDF5 files (`episode_<i>.hdf5`), as act-plus-plus does.

Layout (see cotrain_converters/hdf5/aloha.py for what is read):
- `observations/qpos` [T, Ds] float32 state, `observations/qvel` [T, Ds] zeros (the sim has no joint
  velocities; the converter does not read them), `action` [T, Da] float32;
- `observations/images/<camera>`: raw [T, H, W, 3] uint8, or with `compressed=True` JPEG bytes in
  zero-padded rows [T, max_len] uint8 plus root `compress_len` [n_cameras, T] (act-plus-plus's
  `compress_data.py` layout);
- root attributes `sim` and `compress`.
ALOHA files hold no instruction and no rate: a folder is one task (converted with `--task`), and the
converter assumes ALOHA's 50 Hz. Recordings of the 10 Hz sim robots are written frame for frame, so
leave `--fps` unset when converting them (chunks then hold the recorded consecutive steps).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cotrain.lab.sim.recording import Recording

__all__ = ["write_aloha_episode", "write_aloha_folder"]


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_aloha_episode(path: Path, rec: Recording, *, compressed: bool = True, quality: int = 90) -> Path:
    """One recording as an ALOHA episode file at `path`."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    cameras = sorted(rec.images)
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = True
        f.attrs["compress"] = compressed
        f.create_dataset("observations/qpos", data=rec.state.astype(np.float32))
        f.create_dataset("observations/qvel", data=np.zeros_like(rec.state, dtype=np.float32))
        f.create_dataset("action", data=rec.action.astype(np.float32))
        if not compressed:
            for cam in cameras:
                frames = rec.images[cam]
                f.create_dataset(f"observations/images/{cam}", data=frames, chunks=(1, *frames.shape[1:]))
            return path
        encoded = {cam: [_jpeg(img, quality) for img in rec.images[cam]] for cam in cameras}
        width = max(len(b) for frames in encoded.values() for b in frames)
        lengths = np.zeros((len(cameras), rec.length), np.int64)
        for k, cam in enumerate(cameras):
            rows = np.zeros((rec.length, width), np.uint8)
            for t, data in enumerate(encoded[cam]):
                rows[t, : len(data)] = np.frombuffer(data, np.uint8)
                lengths[k, t] = len(data)
            f.create_dataset(f"observations/images/{cam}", data=rows)
        f.create_dataset("compress_len", data=lengths)
    return path


def write_aloha_folder(root: Path, recordings: Sequence[Recording], *, compressed: bool = True) -> list[Path]:
    """`root/episode_<i>.hdf5` for every recording (one task per folder, as ALOHA datasets are)."""
    return [write_aloha_episode(root / f"episode_{i}.hdf5", rec, compressed=compressed)
            for i, rec in enumerate(recordings)]
