"""RLDS / Open X-Embodiment datasets as TFDS TFRecord folders, read without TensorFlow.

Layout (TFDS `builder_from_directory`): `<ds>/<version>/` holds `dataset_info.json` (name, splits with
`shardLengths`), `features.json` (shapes, dtypes, image encodings) and the record files
`<ds>-<split>.tfrecord-<i:05d>-of-<n:05d>`, possibly gzip-compressed. SRC is the version folder or
the dataset folder above it (when it holds exactly one version). Each record is one episode: a
`tf.train.Example` whose keys are the nested feature names joined with '/' and whose step features
are concatenated over the T steps (see tfds_features.py; framing and CRCs in tfrecord.py).

One unit = one record. Listing reads only record headers and the `steps/is_first` feature, seeking
over images, so it stays cheap on terabyte datasets; payload CRCs are checked when an episode is
converted. RLDS has no timestamps: step t is at t / fps, with fps from the standardisation table
(oxe_table.py) or `--source-fps`. Following RLDS, the action of the `is_last` step is marked invalid.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit, UnitSink
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import image_problem, is_jpeg
from cotrain_converters.rlds.oxe_table import KeyRef, Standard, load_table, standardise
from cotrain_converters.rlds.tf_example import RawFeature, decode_int64s, find_feature, parse_example
from cotrain_converters.rlds.tfds_features import FeatureSpec, decode_steps, load_features
from cotrain_converters.rlds.tfrecord import RecordRef, is_gzip, open_tfrecord, read_record, scan_records

_FILE_RE = re.compile(r"^(?P<name>.+)-(?P<split>[^-]+)\.tfrecord-(?P<i>\d{5})-of-(?P<n>\d{5})(?:\.gz|\.gzip)?$")
_PNG = b"\x89PNG\r\n\x1a\n"


class RldsOptions(RobotOptions):
    """Options of the RLDS converter (all robot options, plus where and how to read)."""

    embodiment: str | None = Field(None, description="Embodiment name (default: from the standardisation table).")  # type: ignore[assignment]  # RLDS may leave it unset
    split: str = Field("train", description="TFDS split to convert, e.g. train, val, test.")
    table: str | None = Field(None, description="YAML/JSON file adding or overriding standardisation entries.")
    dataset: str | None = Field(None, description="Table entry to use (default: the name in dataset_info.json).")
    source_fps: float | None = Field(None, gt=0, description="Nominal rate of the source in Hz (overrides the table).")


@dataclasses.dataclass(frozen=True)
class _Layout:
    root: Path
    name: str
    version: str
    features_path: Path
    features: dict[str, FeatureSpec]
    files: list[Path]
    shard_lengths: list[int] | None
    standard: Standard


def _version_dir(src: Path) -> Path:
    if (src / "features.json").is_file():
        return src
    found = sorted(p.parent for p in src.glob("*/features.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(src, "no features.json here or in a version folder below: not a TFDS/RLDS dataset")
    raise ConfigError(f"{src} holds several versions ({', '.join(p.name for p in found)}); pass one version folder")


def _dataset_info(root: Path) -> dict[str, Any]:
    path = root / "dataset_info.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable dataset_info.json: {exc}") from None
    return info if isinstance(info, dict) else {}


def _split_files(root: Path, name: str | None, split: str) -> tuple[str, list[Path]]:
    matches = [(m, p) for p in sorted(root.iterdir())
               if (m := _FILE_RE.match(p.name)) and (not name or m["name"] == name)]
    splits = sorted({m["split"] for m, _ in matches})
    chosen = [(m, p) for m, p in matches if m["split"] == split]
    if not chosen:
        raise ConfigError(f"--split {split!r}: no '<name>-{split}.tfrecord-*' files in {root}; "
                          f"splits found: {', '.join(splits) or 'none'}")
    total = int(chosen[0][0]["n"])
    indices = sorted(int(m["i"]) for m, _ in chosen)
    if {int(m["n"]) for m, _ in chosen} != {total} or indices != list(range(total)):
        missing = sorted(set(range(total)) - set(indices))
        raise DataError(root, f"split {split!r} is incomplete: expected {total} record files, missing shard(s) "
                              f"{', '.join(f'{i:05d}' for i in missing) or '(inconsistent -of- counts)'}")
    return chosen[0][0]["name"], sorted((p for _, p in chosen), key=lambda p: int(_FILE_RE.match(p.name)["i"]))  # type: ignore[index]  # every listed path matched _FILE_RE


def _shard_lengths(info: dict[str, Any], split: str, files: int, root: Path) -> list[int] | None:
    for entry in info.get("splits") or []:
        if isinstance(entry, dict) and entry.get("name") == split and entry.get("shardLengths"):
            lengths = [int(n) for n in entry["shardLengths"]]
            if len(lengths) != files:
                raise DataError(root / "dataset_info.json", f"split {split!r} lists {len(lengths)} shardLengths for "
                                                            f"{files} record files")
            return lengths
    return None


@functools.lru_cache(maxsize=4)
def _layout(src: Path, split: str, table_file: str | None, dataset: str | None, stamp: tuple) -> _Layout:
    root = _version_dir(src)
    info = _dataset_info(root)
    name, files = _split_files(root, info.get("name"), split)
    features_path = root / "features.json"
    features = load_features(features_path)
    standard = standardise(dataset or name, load_table(table_file), features, features_path)
    return _Layout(root, name, str(info.get("version", root.name)), features_path, features, files,
                   _shard_lengths(info, split, len(files), root), standard)


def _stamp(*paths: Path) -> tuple:
    """Sizes and times of the files the layout is built from, so an edit is never served from cache."""
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.exists())


def _layout_of(src: Path, opts: RldsOptions) -> _Layout:
    metadata = [src, *src.glob("*.json"), *(p for p in src.iterdir() if p.is_dir()), *src.glob("*/*.json")]
    stamp = _stamp(*metadata, *([Path(opts.table)] if opts.table else []))
    return _layout(src, opts.split, opts.table, opts.dataset, stamp)


def _steps_in(fh: BinaryIO, path: Path, ref: RecordRef) -> int:
    """T of one record from its `steps/is_first` alone; 0 when unreadable (the load reports why)."""
    try:
        fh.seek(ref.offset + 12)
        feature = find_feature(fh, ref.length, "steps/is_first", path, ref.index)
        return len(decode_int64s(feature, path, "steps/is_first", ref.index)) if feature else 0
    except (DataError, OSError, EOFError):
        return 0


class RldsRef(TypedDict):
    """A unit's `ref`: one record of a TFRecord file, or the place a damaged file stops being readable."""

    file: str  # name inside the split's folder
    record: int
    offset: NotRequired[int]  # where the record starts (byte offset), and its payload length
    length: NotRequired[int]
    error: NotRequired[str]  # a unit that fails when converted, so --on-bad-episode skip can skip it


def _file_units(path: Path, expected: int | None, first: int) -> list[Unit[RldsRef]]:
    refs, error = scan_records(path)
    units: list[Unit[RldsRef]] = []
    with open_tfrecord(path) as fh:
        for ref in refs:
            ref_doc = RldsRef(file=path.name, record=ref.index, offset=ref.offset, length=ref.length)
            units.append(Unit(first + len(units), f"{path.name}/{ref.index}", _steps_in(fh, path, ref), ref_doc))
    problem = error.problem if error else None
    if problem is None and expected is not None and len(refs) != expected:
        problem = f"record {len(refs)}: the file holds {len(refs)} records but dataset_info.json lists {expected}"
    if problem is not None:  # a unit that fails when converted, so --on-bad-episode skip can skip it
        units.append(Unit(first + len(units), f"{path.name}/{len(refs)}", 0,
                          RldsRef(file=path.name, record=len(refs), error=problem)))
    return units


def list_units(src: Path, opts: RldsOptions) -> list[Unit[RldsRef]]:
    """One unit per record of the split's files, in file and record order."""
    _resolved(src, opts)  # fail before scanning the files if the rate or embodiment is unknown
    layout = _layout_of(src, opts)
    units: list[Unit[RldsRef]] = []
    for i, path in enumerate(layout.files):
        units += _file_units(path, layout.shard_lengths[i] if layout.shard_lengths else None, len(units))
    return units


def _resolved(src: Path, opts: RldsOptions) -> RldsOptions:
    """Options with the embodiment and source rate filled from the table; errors if neither is known."""
    layout = _layout_of(src, opts)
    std, known = layout.standard, f"the standardisation table has no entry {opts.dataset or layout.name!r} with"
    embodiment = opts.embodiment or std.embodiment
    if not embodiment:
        raise ConfigError(f"--embodiment is required: {known} an embodiment")
    if not (opts.source_fps or std.fps):
        raise ConfigError(f"--source-fps is required: {known} a rate (RLDS stores no timestamps)")
    return opts.model_copy(update={"embodiment": embodiment})


def describe(src: Path, opts: RldsOptions, units: Sequence[Unit[RldsRef]]) -> DatasetInfo:
    """State/action names, cameras and rate from features.json and the table; keys used go in `extra`."""
    opts = _resolved(src, opts)
    layout = _layout_of(src, opts)
    std = layout.standard
    extra = {
        "dataset": layout.name, "version": layout.version, "split": opts.split,
        "table_entry": std.entry or "generic", "action_convention": std.action_convention,
        "state_keys": [_ref_text(r) for r in std.state], "action_keys": [_ref_text(r) for r in std.action],
        "camera_keys": std.cameras, "language_key": std.language, "notes": std.notes,
        "last_step_action_valid": False,
    }
    return robot_info(opts, state_names=std.state_names, action_names=std.action_names,
                      fps=opts.source_fps or std.fps, cameras=list(std.cameras.values()),
                      where=str(layout.features_path), extra=extra)


def _ref_text(ref: KeyRef) -> str:
    return ref.full if ref.start is None and ref.stop is None else f"{ref.full}[{ref.start or ''}:{ref.stop or ''}]"


# One open gzip stream per process: gzip only seeks forward cheaply, and a worker converts the
# records of a file in order, so keeping the stream open avoids decompressing from the start each time.
_GZIP_OPEN: dict[tuple, BinaryIO] = {}


def _payload(path: Path, ref_doc: RldsRef) -> bytes:
    ref = RecordRef(ref_doc["record"], ref_doc["offset"], ref_doc["length"])
    if not is_gzip(path):
        with open(path, "rb") as fh:
            return read_record(fh, path, ref)
    key = _stamp(path)
    if key not in _GZIP_OPEN:
        for old in _GZIP_OPEN.values():
            old.close()
        _GZIP_OPEN.clear()
        _GZIP_OPEN[key] = open_tfrecord(path)
    return read_record(_GZIP_OPEN[key], path, ref)


def _feature(feats: dict[str, RawFeature], key: str, path: Path, record: int) -> RawFeature:
    if key not in feats:
        raise DataError(path, f"record {record}: the Example has no feature {key!r}", key=key)
    return feats[key]


def _vectors(refs: tuple[KeyRef, ...], ctx: _Episode) -> np.ndarray:
    parts = []
    for ref in refs:
        values = np.asarray(ctx.decode(ref.full)).reshape(ctx.steps, ctx.layout.features[ref.full].dims)
        parts.append(values[:, ref.start: ref.stop].astype(np.float32))
    return np.concatenate(parts, axis=1) if parts else np.zeros((ctx.steps, 0), np.float32)


@dataclasses.dataclass
class _Episode:
    """One parsed record and the means to decode its step features."""

    path: Path
    record: int
    layout: _Layout
    feats: dict[str, RawFeature]
    steps: int = 0

    def decode(self, key: str) -> np.ndarray | list[bytes]:
        return decode_steps(self.layout.features[key], _feature(self.feats, key, self.path, self.record),
                            self.steps, self.path, self.record)


def _frame_source(images: list[bytes], camera: str, ep: _Episode, episode_id: str):  # noqa: ANN202
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[bytes]:
        for i in indices:
            data = images[i]
            if not (is_jpeg(data) or data.startswith(_PNG)):
                raise DataError(ep.path, f"record {ep.record}: step {i} of {camera!r} is not a JPEG or PNG image "
                                         f"({len(data)} bytes)", episode=episode_id, frame=i, key=camera)
            if problem := image_problem(data):
                raise DataError(ep.path, f"record {ep.record}: {problem}", episode=episode_id, frame=i, key=camera)
            yield data

    return frames


def load_episode(src: Path, opts: RldsOptions, unit: Unit[RldsRef]) -> RobotEpisode:
    """Read one record (CRCs checked), decode the standardised keys, build the episode."""
    layout = _layout_of(src, opts)
    path, record = layout.root / unit.ref["file"], int(unit.ref["record"])
    if "error" in unit.ref:
        raise DataError(path, unit.ref["error"], episode=unit.id)
    ep = _Episode(path, record, layout, parse_example(_payload(path, unit.ref), path, record))
    is_first = decode_int64s(_feature(ep.feats, "steps/is_first", path, record), path, "steps/is_first", record)
    ep.steps = len(is_first)
    if ep.steps == 0:
        raise DataError(path, f"record {record}: empty episode (steps/is_first has no values)", episode=unit.id)
    std = layout.standard
    valid = ~np.asarray(ep.decode("steps/is_last"), bool) if "steps/is_last" in layout.features else None
    tasks = [b.decode("utf-8", errors="replace") for b in ep.decode(std.language)] if std.language else [""]
    fps = float(opts.source_fps or std.fps or 0)
    cameras = {name: _frame_source(ep.decode(key), key, ep, unit.id)  # type: ignore[arg-type]  # camera features decode to encoded images (list[bytes])
               for key, name in std.cameras.items() if not opts.no_images}
    return RobotEpisode(
        episode_id=unit.id, source_file=str(path), state=_vectors(std.state, ep), actions=_vectors(std.action, ep),
        timestamps_s=np.arange(ep.steps, dtype=np.float64) / fps, tasks=_one_or_all(tasks, ep.steps),
        cameras=cameras, valid=valid, fps=fps,
        state_key="+".join(_ref_text(r) for r in std.state), action_key="+".join(_ref_text(r) for r in std.action),
    )


def _one_or_all(tasks: list[str], steps: int) -> list[str]:
    return tasks[:1] if len(set(tasks)) == 1 or steps == 0 else tasks


def _convert_unit(src: Path, opts: RldsOptions, unit: Unit[RldsRef], sink: UnitSink) -> None:
    _BASE.convert_unit(src, _resolved(src, opts), unit, sink)


_BASE = robot_converter(
    "rlds", "RLDS / Open X-Embodiment TFDS TFRecord folders (no TensorFlow needed).", RldsOptions,
    list_units, describe, load_episode,
)
CONVERTER = dataclasses.replace(_BASE, convert_unit=_convert_unit)
