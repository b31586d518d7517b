"""Annotation datasets from robot shard datasets: segment files or scripted motion primitives.

The source is a converted robot (or human-video) dataset; a unit is one of its shards (ref = shard
name), so shards map one to one. Annotation formats read here (`--format auto` tells them apart):
- JSONL (`*.jsonl`): one object per line, `{"episode", "start", "end", "text"}` with frames of the
  source recording, or `start_s` / `end_s` in seconds since the episode start; spans are half-open.
- LeRobot language columns (a LeRobot v2.1/v3 dataset folder, `meta/info.json` + `data/**/*.parquet`):
  `language_persistent` is a list of rows `{role, content, style, timestamp, camera, tool_calls}`
  repeated on every frame of the episode; a row of the chosen style (default `subtask`) is active
  from the first frame whose `timestamp` is >= its own until the next row of that style, or the
  episode's end. Event styles (`interjection`, `vqa`, `trace`) come from `language_events`, where a
  row sits on the frame that emitted it and covers that frame only. Frames are `frame_index`,
  episodes `episode_index`.
- AgiBot World `task_info/task_<id>.json` (a file, or a folder of them): a list of
  `{episode_id, label_info: {action_config: [{start_frame, end_frame, action_text, skill}]}}`
  (AgiBot's files also spell it `lable_info`); `english_action_text` is preferred when present.
Coverage rules, matching and counting are in cotrain/annotate/segments.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from typing_extensions import NotRequired, TypedDict

from cotrain.annotate.primitives import (
    DimMap,
    PrimitiveRules,
    chunk_primitive,
    detect_dims,
    parse_dims,
    trajectory_primitives,
)
from cotrain.annotate.segments import (
    AnnotateOptions,
    EpisodeFrames,
    Segment,
    build_report,
    episodes_from_metas,
    match_segments,
    read_members,
    render_prompt,
    resolve_episode,
    scan_episodes,
)
from cotrain.convert.jsonl import iter_jsonl
from cotrain.convert.plan import fingerprint_source
from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest, load_manifest
from cotrain.dataset.norm_stats import EpisodeLowdim
from cotrain.dataset.shards import decode_npy, encode_json, iter_samples
from cotrain.errors import ConfigError, DataError

PERSISTENT_STYLES = ("subtask", "plan", "memory", "motion", "task_aug")
EVENT_STYLES = ("interjection", "vqa", "trace")


def detect_format(path: Path) -> str:
    """jsonl, lerobot or agibot, from the path's layout and content."""
    if path.is_dir():
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        if _agibot_files(path):
            return "agibot"
    elif path.suffix == ".jsonl":
        return "jsonl"
    elif path.suffix == ".json":
        return "agibot"
    raise DataError(path, "cannot tell the annotation format (expected a .jsonl file, a LeRobot dataset folder with "
                          "meta/info.json, or AgiBot task_info .json files); pass --format")


def _agibot_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "task_info" if (path / "task_info").is_dir() else path
    return sorted(folder.glob("*.json"))


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def read_jsonl(path: Path) -> list[Segment]:
    """Segments of a JSONL file, one object {episode, start, end, text} a line."""
    return [_jsonl_segment(obj, path, n) for n, obj in iter_jsonl(path)]


def _jsonl_segment(obj: Any, path: Path, n: int) -> Segment:
    if not isinstance(obj, dict):
        raise DataError(path, f"line {n}: expected an object {{episode, start, end, text}}")
    episode, text = obj.get("episode"), obj.get("text")
    if not (_int(episode) or isinstance(episode, str)):
        raise DataError(path, f"line {n}: 'episode' must be a string or an integer, got {episode!r}", key="episode")
    if not isinstance(text, str):
        raise DataError(path, f"line {n}: 'text' must be a string, got {text!r}", episode=episode, key="text")
    origin = f"{path.name} line {n}"
    if "start" in obj or "end" in obj:
        start, end = obj.get("start"), obj.get("end")
        if not (_int(start) and _int(end)):
            raise DataError(path, f"line {n}: 'start' and 'end' must be integer frames, got {start!r}, {end!r}",
                            episode=episode, key="start")
        return Segment(episode, start, end, text, origin)
    start, end = obj.get("start_s"), obj.get("end_s")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
        raise DataError(path, f"line {n}: needs 'start'/'end' (frames) or 'start_s'/'end_s' (seconds)",
                        episode=episode, key="start_s")
    return Segment(episode, float(start), float(end), text, origin, seconds=True)  # type: ignore[arg-type]  # all() above checked both are numbers


def read_agibot(path: Path) -> list[Segment]:
    """Segments of AgiBot task_info files (a file or a folder of them)."""
    files = _agibot_files(path)
    if not files:
        raise DataError(path, "no AgiBot task_info .json files")
    segments = []
    for file in files:
        try:
            entries = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(file, f"unreadable JSON: {exc}") from None
        if not isinstance(entries, list):
            raise DataError(file, "expected a list of episodes [{episode_id, label_info}]")
        for i, entry in enumerate(entries):
            segments.extend(_agibot_episode(entry, file, i))
    return segments


def _agibot_episode(entry: Any, file: Path, i: int) -> list[Segment]:
    episode = entry.get("episode_id") if isinstance(entry, dict) else None
    if not (_int(episode) or isinstance(episode, str)):
        raise DataError(file, f"entry {i}: 'episode_id' must be an integer or a string, got {episode!r}",
                        key="episode_id")
    label = entry.get("label_info", entry.get("lable_info")) or {}
    out = []
    for j, action in enumerate(label.get("action_config") or []):
        start, end = action.get("start_frame"), action.get("end_frame")
        text = action.get("english_action_text") or action.get("action_text")
        if not (_int(start) and _int(end)) or not isinstance(text, str):
            raise DataError(file, f"action_config[{j}] needs integer start_frame/end_frame and action_text, got "
                                  f"{start!r}, {end!r}, {text!r}", episode=episode, key="action_config")
        out.append(Segment(episode, start, end, text, f"{file.name} episode {episode} action {j}"))
    return out


def read_lerobot(path: Path, style: str) -> list[Segment]:
    """Segments of a LeRobot dataset's language annotations in the given style."""
    import pyarrow.parquet as pq

    if style not in PERSISTENT_STYLES + EVENT_STYLES:
        raise ConfigError(f"--style {style!r}: LeRobot styles are {', '.join(PERSISTENT_STYLES + EVENT_STYLES)}")
    column = "language_persistent" if style in PERSISTENT_STYLES else "language_events"
    files = sorted((path / "data").rglob("*.parquet"))
    if not files:
        raise DataError(path, "LeRobot dataset without data/**/*.parquet files")
    frames: dict[int, list[tuple[int, float, Any]]] = {}
    for file in files:
        names = pq.read_schema(file).names
        if column not in names:
            raise DataError(file, f"no column {column!r}: this LeRobot dataset has no language annotations",
                            key=column)
        table = pq.read_table(file, columns=["episode_index", "frame_index", "timestamp", column])
        rows = zip(*(table.column(c).to_pylist() for c in ("episode_index", "frame_index", "timestamp", column)))
        for ep, frame, ts, lang in rows:
            frames.setdefault(int(ep), []).append((int(frame), float(ts), lang or []))
    segments = []
    for ep in sorted(frames):
        ordered = sorted(frames[ep], key=lambda r: r[0])
        where = f"{path.name} episode {ep}"
        segments += (_persistent(ep, ordered, style, where) if column == "language_persistent"
                     else _events(ep, ordered, style, where))
    return segments


def _persistent(ep: int, frames: list[tuple[int, float, Any]], style: str, where: str) -> list[Segment]:
    rows, seen = [], set()
    for _, _, lang in frames:  # broadcast on every frame; collect each distinct row once
        for row in lang:
            ident = (row.get("timestamp"), row.get("role"), row.get("content"), row.get("style"))
            if ident not in seen and row.get("style") == style and row.get("content") is not None:
                seen.add(ident)
                rows.append(row)
    rows.sort(key=lambda r: float(r["timestamp"]))
    times = np.array([t for _, t, _ in frames])
    index = [f for f, _, _ in frames]
    extent = index[-1] + 1
    starts = []
    for row in rows:
        k = int(np.searchsorted(times, float(row["timestamp"]) - 1e-4, side="left"))  # float32 timestamps
        starts.append(index[k] if k < len(index) else extent)
    out = []
    for i, (row, start) in enumerate(zip(rows, starts)):
        later = [s for s in starts[i + 1:] if s > start]
        end = later[0] if later else extent
        if start >= extent:  # the row begins after the episode's last frame: keep it to count it
            end = start + 1
        out.append(Segment(ep, start, end, row["content"], f"{where} {style} row at {float(row['timestamp']):g} s"))
    return out


def _events(ep: int, frames: list[tuple[int, float, Any]], style: str, where: str) -> list[Segment]:
    return [Segment(ep, f, f + 1, row["content"], f"{where} {style} event at frame {f}")
            for f, _, lang in frames for row in lang
            if row.get("style") == style and row.get("content") is not None]


@lru_cache(maxsize=4)
def _load_segments(path: str, fmt: str, style: str, signature: tuple[int, int]) -> tuple[str, tuple[Segment, ...]]:
    p = Path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    readers = {"jsonl": read_jsonl, "agibot": read_agibot, "lerobot": lambda q: read_lerobot(q, style)}
    return fmt, tuple(readers[fmt](p))


def load_segments(opts: AnnotateOptions) -> tuple[str, tuple[Segment, ...]]:
    """(format, segments) of --from; cached per process on the path's size and modification time."""
    path = Path(opts.from_file or "")
    if not path.exists():
        raise DataError(path, "annotation source not found")
    st = path.stat()
    return _load_segments(str(path.resolve()), opts.format, opts.style, (st.st_size, st.st_mtime_ns))


def _check_mode(opts: AnnotateOptions) -> None:
    if bool(opts.from_file) == bool(opts.scripted):
        raise ConfigError("give exactly one of --from FILE (segment annotations) or --scripted (motion primitives)")


def _dims(manifest: Manifest, opts: AnnotateOptions) -> tuple[DimMap, list[str]]:
    what = "state" if opts.scripted_from == "state" else "action"
    names = list(manifest.state_names if what == "state" else manifest.action_names)
    dims = parse_dims(opts.dims, names, what) if opts.dims else detect_dims(names, what)
    return dims, names


class AnnotationsRef(TypedDict):
    """A unit's `ref`: the source dataset's shard it annotates."""

    shard: str
    # episode id -> indices into the segment file's segments (file order); absent with --scripted
    segments: NotRequired[dict[str, list[int]]]


def list_units(src: Path, opts: AnnotateOptions) -> list[Unit[AnnotationsRef]]:
    """One unit per shard of the cotrain dataset being annotated."""
    _check_mode(opts)
    manifest = load_manifest(src)
    if opts.scripted:
        _dims(manifest, opts)  # fail before any work when the dimensions cannot be told
        return [Unit(i, s.name, s.samples, AnnotationsRef(shard=s.name)) for i, s in enumerate(manifest.shards)]
    _, segments = load_segments(opts)
    scan = scan_episodes(src)
    matched, _ = match_segments([ep for eps in scan.values() for ep in eps], segments)
    return [Unit(i, s.name, s.samples, AnnotationsRef(shard=s.name, segments={
                ep.id: matched[ep.id] for ep in scan[s.name] if ep.id in matched}))
            for i, s in enumerate(manifest.shards)]


def describe(src: Path, opts: AnnotateOptions, units: Sequence[Unit[AnnotationsRef]]) -> DatasetInfo:
    """The annotated dataset's info: the source manifest plus the annotation columns."""
    manifest = load_manifest(src)
    if opts.scripted:
        dims, names = _dims(manifest, opts)
        source = {"format": "scripted", "from": opts.scripted_from, "dims": dims.as_names(names), "window": opts.window,
                  "threshold": opts.threshold, "rotation_scale": opts.rotation_scale,
                  "gripper_increase": opts.gripper_increase}
        report: dict[str, Any] = {"source": source, "episodes": manifest.num_episodes, "frames": manifest.num_samples,
                                  "samples": manifest.num_samples}
    else:
        fmt, segments = load_segments(opts)
        path = Path(opts.from_file or "")
        source = {"format": fmt, "file": path.name, "sha256": fingerprint_source(path)}
        episodes = [ep for eps in scan_episodes(src).values() for ep in eps]
        report = build_report(episodes, segments, manifest.fps, opts.uncovered, source)
    return DatasetInfo(modality=keys.ANNOTATION, embodiment=manifest.embodiment, state_names=manifest.state_names,
                       fps=manifest.fps, cameras=manifest.cameras,
                       image_size=tuple(manifest.image_size) if manifest.image_size else None,  # type: ignore[arg-type]  # manifest image sizes are [height, width]
                       extra={"source_dataset": manifest.name, "annotation": report})


def _shard_texts(src: Path, opts: AnnotateOptions, unit: Unit[AnnotationsRef], manifest: Manifest,
                 samples: list[dict[str, bytes]]) -> tuple[list[EpisodeFrames], list[tuple[str | None, dict]]]:
    """Episodes of the shard and, per sample: (text or None when uncovered, its `annotation` meta)."""
    where = src / unit.ref["shard"]
    episodes = episodes_from_metas([json.loads(s[keys.META]) for s in samples], str(where))
    out: list[tuple[str | None, dict]] = []
    if opts.scripted:
        dims, _ = _dims(manifest, opts)
        rules = PrimitiveRules(opts.window, opts.threshold, opts.rotation_scale, opts.gripper_increase)
        for ep in episodes:
            group = samples[len(out): len(out) + len(ep.frames)]
            phrases = _scripted(group, dims, rules, opts.scripted_from, where, ep.id)
            out += [(p, {"source": "scripted"}) for p in phrases]
        return episodes, out
    fmt, segments = load_segments(opts)
    for ep in episodes:
        matched = unit.ref.get("segments", {}).get(ep.id, [])
        cov = resolve_episode(ep, [segments[i] for i in matched], manifest.fps)
        out += [(t, {"source": fmt, "segment": None if s is None else [s.start, s.end],
                     "seconds": bool(s and s.seconds)}) for t, s in zip(cov.texts, cov.segments)]
    return episodes, out


def _scripted(group: list[dict[str, bytes]], dims: DimMap, rules: PrimitiveRules, mode: str, where: Path,
              episode: str) -> list[str]:
    member = keys.STATE if mode == "state" else keys.ACTIONS
    arrays = [decode_npy(s[member]) for s in group]
    width = arrays[0].shape[-1] if arrays[0].ndim else 0
    highest = max(i for i in (dims.x, dims.y, dims.z, dims.roll, dims.pitch, dims.yaw, dims.gripper) if i is not None)
    if highest >= width:
        raise ConfigError(f"--dims: dimension {highest} does not exist; {where} episode {episode} has "
                          f"{width}-dim {mode}")
    if mode == "state":
        return trajectory_primitives(np.stack(arrays).astype(np.float64), dims, rules)
    phrases = [chunk_primitive(a.astype(np.float64), dims, rules) for a in arrays]
    if len(phrases) > 1:
        phrases[-1] = phrases[-2]  # as for states: the last frame has no future motion of its own
    return phrases


def convert_unit(src: Path, opts: AnnotateOptions, unit: Unit[AnnotationsRef], sink: UnitSink) -> None:
    """Copy one shard's samples with their segment text added."""
    path = src / unit.ref["shard"]
    manifest = load_manifest(src)
    member = keys.ACTIONS if opts.scripted and opts.scripted_from == "actions" else keys.STATE
    small = read_members(path, [keys.META, keys.STATE] + ([member] if member != keys.STATE else []))
    episodes, flat = _shard_texts(src, opts, unit, manifest, small)
    keep = [text is not None or opts.uncovered == "empty" for text, _ in flat]
    start = 0
    for ep in episodes:
        idx = [k for k in range(start, start + len(ep.frames)) if keep[k]]
        start += len(ep.frames)
        if idx:
            state = np.stack([decode_npy(small[k][keys.STATE]) for k in idx]).astype(np.float32).reshape(len(idx), -1)
            sink.add_episode(EpisodeLowdim(state=state, actions=np.zeros((len(idx), 0), np.float32),
                                           valid=np.ones(len(idx), bool)))
    name = opts.name or src.resolve().name
    for k, raw in enumerate(iter_samples(path)):
        # The ignores: a sample's __key__ is a str, which iter_samples' dict[str, bytes] type does not say.
        if raw["__key__"].encode() != small[k]["__key__"]:  # type: ignore[attr-defined]  # __key__ is a str
            raise DataError(path, "shard changed while being read", key=raw["__key__"])  # type: ignore[arg-type]  # __key__ is a str
        if keep[k]:
            sink.add(_members(raw, flat[k], opts, name))


def _members(raw: dict[str, bytes], item: tuple[str | None, dict[str, Any]], opts: AnnotateOptions,
             name: str) -> dict[str, bytes]:
    text, annotation = item
    meta = json.loads(raw[keys.META])
    instruction = raw.get(keys.INSTRUCTION, b"").decode("utf-8")
    out = {k: v for k, v in raw.items() if k.endswith(keys.IMAGE_EXT)}
    out.update({
        keys.STATE: raw[keys.STATE],
        keys.INSTRUCTION: instruction.encode("utf-8"),
        keys.PROMPT: render_prompt(opts.prompt, instruction).encode("utf-8"),
        keys.TARGET: (text or "").encode("utf-8"),
        keys.META: encode_json({**meta, "dataset": name, "modality": keys.ANNOTATION, "source_key": raw["__key__"],
                                "annotation": annotation}),
    })
    return out


CONVERTER = Converter(
    "annotations",
    "Dense per-frame language (segment files or scripted motion primitives) for a converted robot dataset.",
    AnnotateOptions, list_units, describe, convert_unit,
)
