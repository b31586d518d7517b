"""TRI VLA Foundry / LBM WebDataset shards, re-keyed into cotrain samples.

Layout (TRI-ML/vla_foundry `data/robotics/README.md`, `preprocessing/robotics/converters/spartan.py`):
`manifest.jsonl` with one `{"shard": ..., "num_sequences": N}` per line, the tar shards, and
optionally `stats.json` (per lowdim key: mean, std, min, max, percentile_*, ...). Real manifests name
a shard by its stem relative to the manifest's folder (`"shard_000000"`: VLA Foundry's dataloader
appends `.tar`), its docs by the file (`"shards/shard-000000.tar"`); both are read, and neither may
lead outside the dataset folder.
Each tar sample (key = a UUID) is ONE anchor frame, already windowed by the preprocessor:
- `<k>.<cam>_t-1.jpg`, `<k>.<cam>_t0.jpg`: cameras one step before and at the anchor (224x224);
- `<k>.lowdim.npz`: arrays over 16 steps = 1 past + anchor + 14 future, e.g.
  `robot__{actual,desired,action}__poses__{left,right}::panda__{xyz,rot_6d}` (16, 3|6) f64,
  `robot__*__grippers__{left,right}::panda_hand` (16, 1), `past_mask`/`future_mask` (16,) bool
  (`future_mask` is True at the anchor and at future steps inside the episode; padded steps are
  edge copies), `language_instruction` (16,) `<U55`;
- `<k>.metadata.json` (`episode_id`, `anchor_timestep`, `anchor_relative_idx`, ...) and
  `<k>.language_instructions.json` (`{"original": [...], "randomized": [...], ...}`).

cotrain keeps the anchor's cameras (`_t0`, JPEG bytes passed through), the state at the anchor, and
the action chunk over the anchor and future steps (H = --horizon clipped to the steps the window
holds, 15 for LBM), valid where `future_mask` is. Source shards are the conversion units; samples
of one episode within a shard form one stats group. LBM samples carry no clock, so `--fps` is refused.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from typing_extensions import TypedDict

from cotrain.convert.jsonl import iter_jsonl
from cotrain.convert.robot import parse_camera_map, robot_info
from cotrain.convert.spec import Converter, DatasetInfo, RobotOptions, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.dataset.norm_stats import EpisodeLowdim
from cotrain.dataset.shards import encode_json, encode_npy, iter_samples
from cotrain.errors import ConfigError, DataError, suggest
from cotrain.media.image import image_problem, parse_size, to_jpeg
from cotrain_converters.source_files import inside, tar_damage

MANIFEST = "manifest.jsonl"
SOURCE_STATS = "stats.json"
_ANCHOR_IMAGE = re.compile(r"^(?P<cam>.+)_t0\.(?:jpg|jpeg)$")
_SIDES = ("left", "right")


def default_keys(family: str) -> list[str]:
    """VLA Foundry's LBM proprioception/action field order: xyz, rot_6d, gripper, left before right."""
    poses = [f"robot__{family}__poses__{s}::panda__{c}" for c in ("xyz", "rot_6d") for s in _SIDES]
    return poses + [f"robot__{family}__grippers__{s}::panda_hand" for s in _SIDES]


class LbmOptions(RobotOptions):
    """Options of the LBM converter (robot options, plus which lowdim arrays and instructions to use)."""

    embodiment: str = Field("lbm_bimanual_panda", description="Embodiment name recorded with every sample.")
    state_keys: str | None = Field(
        None, description="Comma list of lowdim.npz arrays forming the state at the anchor step "
                          "(default: actual xyz, rot_6d and gripper of the left then right arm).")
    action_source: Literal["action", "desired"] = Field(
        "action", description="Array family of the default action keys: robot__action__* or robot__desired__*.")
    action_keys: str | None = Field(
        None, description="Comma list of lowdim.npz arrays forming the action chunk (default: the "
                          "--action-source family in the state's order).")
    instruction_set: Literal["original", "randomized", "verbose", "alternative"] = Field(
        "original", description="language_instructions.json list to draw the instruction from "
                                "(entry anchor_timestep mod list length).")


def _key_list(text: str | None, default: list[str]) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()] if text else default


def state_keys(opts: LbmOptions) -> list[str]:
    """The state keys: --state-keys or the defaults for the measured state."""
    return _key_list(opts.state_keys, default_keys("actual"))


def action_keys(opts: LbmOptions) -> list[str]:
    """The action keys: --action-keys or the defaults for --action-source."""
    return _key_list(opts.action_keys, default_keys(opts.action_source))


def component_names(key: str, dims: int) -> list[str]:
    """`robot__actual__poses__left::panda__xyz` (3) -> `poses_left_panda_xyz_x`, `..._y`, `..._z`."""
    stem = re.sub(r"^robot__(actual|desired|action)__", "", key)
    stem = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")
    if dims == 1:
        return [stem]
    if dims == 3 and stem.endswith("xyz"):
        return [f"{stem}_{axis}" for axis in "xyz"]
    return [f"{stem}_{i}" for i in range(dims)]


@dataclass(frozen=True)
class _Sample:
    """One parsed source sample; `where` is the shard path, `key` the source sample key."""

    where: str
    key: str
    lowdim: dict[str, np.ndarray]
    metadata: dict[str, Any]
    instructions: dict[str, Any]
    images: dict[str, bytes]

    def fail(self, problem: str, *, key: str | None = None, frame: int | None = None) -> DataError:
        episode, anchor = self.metadata.get("episode_id"), self.metadata.get("anchor_timestep")
        if frame is None and isinstance(anchor, int):
            frame = anchor
        return DataError(self.where, f"sample {self.key}: {problem}", episode=episode, frame=frame, key=key)

    def check_cameras(self, expected: Sequence[str] | None) -> None:
        """Every camera of the dataset (`expected`) and every one `metadata.json` `camera_names` lists
        has its `_t0` image here: a camera absent from the sample that sets the layout would
        otherwise vanish from every sample without a word."""
        listed = self.metadata.get("camera_names")
        wanted = {str(c) for c in (listed if isinstance(listed, list) else [])} | set(expected or [])
        missing = sorted(wanted - set(self.images))
        if missing:
            raise self.fail(f"no {missing[0]}_t0 image, but the dataset or metadata.json camera_names has that camera "
                            f"(images here: {', '.join(sorted(self.images)) or 'none'})", key=f"{missing[0]}_t0.jpg")

    @property
    def length(self) -> int:
        return len(self.array("future_mask"))

    def array(self, name: str) -> np.ndarray:
        if name not in self.lowdim:
            hint = suggest(name, self.lowdim) or f"; it holds {len(self.lowdim)} arrays"
            raise self.fail(f"lowdim.npz has no array {name!r}{hint}", key=name)
        return self.lowdim[name]

    def anchor(self) -> int:
        """The anchor's index in the window: metadata `anchor_relative_idx`, else the first future step."""
        mask = self.array("future_mask").astype(bool)
        idx = self.metadata.get("anchor_relative_idx")
        anchor = int(idx) if isinstance(idx, int) else int(np.argmax(mask))
        if not 0 <= anchor < len(mask) or not mask[anchor]:
            raise self.fail(f"anchor index {anchor} is not a valid step of future_mask {mask.astype(int).tolist()}",
                            key="future_mask")
        return anchor

    def window(self, name: str) -> np.ndarray:
        """[steps, dims] float64 view of one array (trailing axes flattened); its steps must match the masks."""
        arr = self.array(name)
        if arr.ndim == 0 or arr.shape[0] != self.length or not np.issubdtype(arr.dtype, np.number):
            raise self.fail(f"array {name!r} must be numeric with {self.length} steps, got {arr.dtype} {arr.shape}",
                            key=name)
        return arr.reshape(arr.shape[0], -1).astype(np.float64)


def _parse(raw: Mapping[str, Any], where: str) -> _Sample:
    key = str(raw["__key__"])
    if "lowdim.npz" not in raw:
        raise DataError(where, f"sample {key}: no lowdim.npz member", key="lowdim.npz")
    try:
        with np.load(io.BytesIO(raw["lowdim.npz"]), allow_pickle=False) as z:
            lowdim = {name: z[name] for name in z.files}
        metadata = json.loads(raw["metadata.json"]) if "metadata.json" in raw else {}
        instructions = json.loads(raw["language_instructions.json"]) if "language_instructions.json" in raw else {}
    except (ValueError, OSError) as exc:  # bad zip, pickled object array, bad JSON
        raise DataError(where, f"sample {key}: unreadable member: {exc}") from None
    if not isinstance(metadata, dict) or not isinstance(instructions, dict):
        raise DataError(where, f"sample {key}: metadata.json and language_instructions.json must be JSON objects")
    images = {m.group("cam"): raw[ext] for ext in raw if (m := _ANCHOR_IMAGE.match(ext))}
    return _Sample(where, key, lowdim, metadata, instructions, images)


def shard_file(src: Path, shard: str, entry: int) -> Path:
    """The tar a manifest entry names: `x.tar` as written, a stem `x` as `x.tar` (VLA Foundry's reader
    appends `.tar` to every entry), relative to the dataset folder and never outside it."""
    where, name = src / MANIFEST, shard if shard.endswith(".tar") else shard + ".tar"
    path = inside(src, name, where=where, key=f"entry {entry}", what="shard")
    if not path.is_file():
        tried = repr(name) if name == shard else f"{name!r} (the stem {shard!r} + .tar, as VLA Foundry reads it)"
        raise DataError(where, f"shard {tried} not found under {src}", key=f"entry {entry}")
    return path


def _read_manifest(src: Path) -> list[tuple[str, int]]:
    path = src / MANIFEST
    if not path.is_file():
        raise DataError(src, f"no {MANIFEST}: expected a VLA Foundry dataset folder ({MANIFEST} + tar shards)")
    out = []
    for n, row in iter_jsonl(path):
        try:
            out.append((str(row["shard"]), int(row["num_sequences"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(path, f"line {n}: expected {{\"shard\": ..., \"num_sequences\": N}}, got {row!r:.80} "
                                  f"({type(exc).__name__})") from None
    return out


class LbmLayout(TypedDict):
    """The layout every sample must share (step counts, per-key dims, camera names)."""

    anchor: int
    length: int
    horizon: int
    state_dims: list[int]
    action_dims: list[int]
    cameras: list[str]


class LbmRef(TypedDict):
    """A unit's `ref`: one shard of manifest.jsonl and the layout probed from the first shard."""

    shard: str
    entry: int  # 1-based line of manifest.jsonl, for error messages
    num_sequences: int
    layout: LbmLayout


def _probe(src: Path, shard: str, opts: LbmOptions) -> LbmLayout:
    """The layout every sample must share, read from the first sample of the first shard."""
    path = shard_file(src, shard, 1)
    if damage := tar_damage(path):
        raise DataError(path, damage)
    raw = next(iter_samples(path), None)
    if raw is None:
        raise DataError(path, "the first shard holds no samples")
    sample = _parse(raw, str(path))
    sample.check_cameras(None)
    anchor = sample.anchor()
    horizon = min(opts.horizon, sample.length - anchor)
    return LbmLayout(
        anchor=anchor,
        length=sample.length,
        horizon=horizon,
        state_dims=[sample.window(k).shape[1] for k in state_keys(opts)],
        action_dims=[sample.window(k).shape[1] for k in action_keys(opts)],
        cameras=sorted(sample.images),
    )


def list_units(src: Path, opts: LbmOptions) -> list[Unit[LbmRef]]:
    """One unit per shard listed in the preprocessor's manifest."""
    if opts.fps is not None:
        raise ConfigError("--fps: LBM samples are windows cut by the preprocessor at its own rate; "
                          "they cannot be resampled (leave --fps unset)")
    rows = _read_manifest(src)
    for n, (shard, _) in enumerate(rows, 1):
        shard_file(src, shard, n)
    if not rows:
        return []
    layout = _probe(src, rows[0][0], opts)
    return [Unit(index=i, id=shard, est_samples=count,
                 ref=LbmRef(shard=shard, entry=i + 1, num_sequences=count, layout=layout))
            for i, (shard, count) in enumerate(rows)]


def _source_stats(src: Path, used: Sequence[str]) -> dict[str, Any]:
    path = src / SOURCE_STATS
    if not path.is_file():
        return {}
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable stats.json: {exc}") from None
    if not isinstance(stats, dict):
        raise DataError(path, f"stats.json must map lowdim keys to statistics, got {type(stats).__name__}")
    return {k: stats[k] for k in used if k in stats}


def describe(src: Path, opts: LbmOptions, units: Sequence[Unit[LbmRef]]) -> DatasetInfo:
    """Names and cameras from the first unit's layout."""
    layout = units[0].ref["layout"]
    skeys, akeys = state_keys(opts), action_keys(opts)
    state_names = [n for k, d in zip(skeys, layout["state_dims"], strict=True) for n in component_names(k, d)]
    action_names = [n for k, d in zip(akeys, layout["action_dims"], strict=True) for n in component_names(k, d)]
    extra = {"state_keys": skeys, "action_keys": akeys, "window_steps": layout["length"],
             "anchor_index": layout["anchor"], "instruction_set": opts.instruction_set,
             "source_stats": _source_stats(src, [*skeys, *akeys])}
    info = robot_info(opts, state_names=state_names, action_names=action_names, fps=None,
                      cameras=layout["cameras"], where=str(shard_file(src, units[0].id, 1)), extra=extra)
    return replace(info, horizon=layout["horizon"])


def _state(sample: _Sample, skeys: Sequence[str], dims: Sequence[int], anchor: int) -> np.ndarray:
    parts = []
    for name, dim in zip(skeys, dims, strict=True):
        part = sample.window(name)[anchor]
        if part.shape[0] != dim:
            raise sample.fail(f"array {name!r} has {part.shape[0]} dims per step, the dataset has {dim}", key=name)
        bad = np.flatnonzero(~np.isfinite(part))
        if bad.size:
            raise sample.fail(f"non-finite state value in dimension {int(bad[0])}", key=name, frame=anchor)
        parts.append(part)
    return np.concatenate(parts).astype(np.float32)


def _chunk(sample: _Sample, akeys: Sequence[str], dims: Sequence[int], anchor: int,
           horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """[H, D] actions over the anchor and future steps, and [H] validity from `future_mask`."""
    if anchor + horizon > sample.length:
        raise sample.fail(f"window has {sample.length - anchor} steps from the anchor, the dataset's horizon is "
                          f"{horizon}", key="future_mask")
    steps = slice(anchor, anchor + horizon)
    valid = sample.array("future_mask").astype(bool)[steps]
    parts = []
    for name, dim in zip(akeys, dims, strict=True):
        part = sample.window(name)[steps]
        if part.shape[1] != dim:
            raise sample.fail(f"array {name!r} has {part.shape[1]} dims per step, the dataset has {dim}", key=name)
        bad = np.argwhere(~np.isfinite(part) & valid[:, None])
        if bad.size:
            raise sample.fail(f"non-finite action at window step {anchor + int(bad[0][0])}", key=name,
                              frame=anchor + int(bad[0][0]))
        parts.append(part)
    # Steps outside the episode repeat the last valid step (cotrain's padding rule for every source).
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(horizon), 0))
    return np.concatenate(parts, axis=1)[last_valid].astype(np.float32), valid


def _instruction(sample: _Sample, opts: LbmOptions, anchor: int) -> str:
    if opts.task:
        return opts.task
    texts = sample.instructions.get(opts.instruction_set) or []
    if texts:
        step = int(sample.metadata.get("anchor_timestep", 0))
        return str(texts[step % len(texts)])
    lang = sample.lowdim.get("language_instruction")
    if lang is not None and lang.ndim == 1 and len(lang) > anchor and str(lang[anchor]).strip():
        return str(lang[anchor]).strip()
    raise sample.fail(f"no {opts.instruction_set!r} entry in language_instructions.json and no language_instruction "
                      "array; pass --task", key="language_instructions.json")


def _frames(sample: _Sample, camera_map: Mapping[str, str], opts: LbmOptions) -> dict[str, bytes]:
    out = {}
    bound = parse_size(opts.image_size)
    for source, name in camera_map.items():
        if source not in sample.images:
            raise sample.fail(f"no {source}_t0 image (it has: {', '.join(sorted(sample.images)) or 'none'})",
                              key=f"{source}_t0.jpg")
        data = sample.images[source]
        if problem := image_problem(data):
            raise sample.fail(problem, key=f"{source}_t0.jpg")
        out[keys.camera_member(name)] = to_jpeg(data, bound, opts.jpeg_quality)
    return out


def convert_unit(src: Path, opts: LbmOptions, unit: Unit[LbmRef], sink: UnitSink) -> None:
    """Write one LBM sample as a cotrain sample."""
    layout = unit.ref["layout"]
    path = shard_file(src, unit.ref["shard"], unit.ref["entry"])
    where = str(path)
    if damage := tar_damage(path):  # else a shard cut short reads as a shorter one, or a sample missing members
        raise DataError(path, damage)
    skeys, akeys, horizon = state_keys(opts), action_keys(opts), layout["horizon"]
    camera_map = {} if opts.no_images else parse_camera_map(opts.cameras, layout["cameras"], where)
    groups: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    count = 0
    for raw in iter_samples(path):
        sample = _parse(raw, where)
        sample.check_cameras(layout["cameras"])
        anchor = sample.anchor()
        state = _state(sample, skeys, layout["state_dims"], anchor)
        chunk, valid = _chunk(sample, akeys, layout["action_dims"], anchor, horizon)
        episode = str(sample.metadata.get("episode_id", unit.id))
        task = _instruction(sample, opts, anchor)
        meta = {"dataset": opts.name or src.name, "modality": keys.ROBOT, "embodiment": opts.embodiment,
                "episode": episode, "frame_index": sample.metadata.get("anchor_timestep"), "task": task,
                "source_shard": unit.ref["shard"], "source_key": sample.key,
                "sample_id": sample.metadata.get("sample_id"), "instructions": sample.instructions}
        sink.add({keys.META: encode_json(meta), keys.STATE: encode_npy(state), keys.ACTIONS: encode_npy(chunk),
                  keys.ACTIONS_VALID: encode_npy(valid), keys.INSTRUCTION: task.encode("utf-8"),
                  **_frames(sample, camera_map, opts)})
        groups.setdefault(episode, []).append((state, chunk, valid))
        count += 1
    if count != unit.ref["num_sequences"]:
        raise DataError(where, f"holds {count} samples but {MANIFEST} says num_sequences={unit.ref['num_sequences']}")
    for rows in groups.values():
        state, chunks, valid = (np.stack(col) for col in zip(*rows, strict=True))
        sink.add_episode(EpisodeLowdim(state=state, actions=chunks[:, 0], valid=valid[:, 0],
                                       chunks=chunks, chunk_valid=valid))


CONVERTER = Converter(
    "lbm", "TRI VLA Foundry / LBM WebDataset shards (manifest.jsonl + tar shards of anchor-frame windows).",
    LbmOptions, list_units, describe, convert_unit,
)
