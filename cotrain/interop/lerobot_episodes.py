"""Converted datasets read as LeRobot episodes: what to export, its shape, and each episode checked.

`resolve_sources` turns a dataset folder or a mixture YAML into local datasets; `ExportLayout` is
the exported dataset's shape (one fps, state and action padded to the widest source, the union of
cameras with their image sizes); `iter_episodes` groups a dataset's samples into episodes and
checks what a LeRobot dataset needs: every frame 0..T-1 in order, one image size per camera, and
action chunks that are the episode's next H per-frame actions (what the LeRobot converter rebuilds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError

STATE, ACTION, SOURCE, IMAGES = "observation.state", "action", "source", "observation.images."


@dataclass(frozen=True)
class ExportSource:
    """One converted dataset to export, under its mixture name."""

    name: str
    root: Path
    manifest: Manifest


@dataclass
class Episode:
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


@dataclass(frozen=True)
class ExportLayout:
    """The exported dataset's shape: fps, padded dims, feature names and cameras with their sizes."""

    fps: float
    state_dim: int
    action_dim: int
    state_names: list[str]
    action_names: list[str]
    cameras: dict[str, tuple[int, int]]  # cotrain camera name -> (height, width)
    is_mixture: bool

    @classmethod
    def build(cls, sources: Sequence[ExportSource], is_mixture: bool, where: str) -> ExportLayout:
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


def iter_episodes(source: ExportSource, index: int, layout: ExportLayout) -> Iterator[Episode]:
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


def _episode(source: ExportSource, index: int, layout: ExportLayout, samples: list[dict[str, Any]],
             seen: set[int]) -> Episode:
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
    return Episode(index, _pad(state, layout.state_dim), _pad(action, layout.action_dim), tasks, images)  # type: ignore[arg-type]  # each image checked to be bytes above


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
