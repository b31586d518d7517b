"""The JSON files of a conversion folder, read back with a check: plan, unit results, shard records, manifest.

cotrain writes each of them atomically, so one that does not parse, or lacks a field, was damaged
outside cotrain (a copy cut short, an editor, a failing disk). Reading goes through here so such a
file stops the run with one line that names it, says what is wrong and how to recover, instead of a
JSONDecodeError traceback or a KeyError three calls later. Recovery is the user's call: the work
folder holds only derived state, so removing it redoes the unfinished work and ends with the same
bytes, while a damaged `manifest.json` describes a dataset someone may be reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, Union

from pydantic import TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from cotrain.errors import DataError

__all__ = ["InfoDoc", "ManifestHeader", "PlanDoc", "ProvenanceDoc", "ShardRecord", "UnitResult", "WorkFileError",
           "finished_matches", "load_plan", "load_shard_record", "load_unit_result", "manifest_header"]

T = TypeVar("T")


class WorkFileError(DataError):
    """A damaged file of a conversion folder. Raised before the run writes anything, and the run
    removes nothing because of it: the message says how to recover."""


class InfoDoc(TypedDict):
    """The converter's `DatasetInfo` as plan.json stores it (`asdict`, through JSON: tuples are lists)."""

    modality: str
    embodiment: str | None  # noqa: UP007 (pydantic evaluates these on Python 3.10 too)
    state_names: list[str]
    action_names: list[str]
    fps: float | None  # noqa: UP007
    horizon: int | None  # noqa: UP007
    cameras: list[str]
    image_size: list[int] | None  # noqa: UP007
    extra: dict[str, Any]  # converter-specific JSON facts, opaque to the framework


class PlanDoc(TypedDict):
    """`.cotrain-work/plan.json`: what is being converted, with which arguments, into which shards."""

    converter: str
    name: str
    info: InfoDoc
    arguments: dict[str, Any]  # the converter's options as JSON; their model is the converter's
    fingerprint: str
    cotrain_version: str
    shards: list[list[int]]


class UnitResult(TypedDict):
    """`.cotrain-work/units/uNNNNNNNN.json`: one converted (or skipped) unit."""

    index: int
    id: Union[str, int]  # noqa: UP007 (Unit.id is a str; a plugin converter may still pass an int)
    samples: int
    episodes: int
    skipped: str | None  # noqa: UP007 (pydantic evaluates this on Python 3.10 too)
    data_bytes: NotRequired[int]


class ShardRecord(TypedDict):
    """`.cotrain-work/shards/shard-NNNNNN.tar.json`: an assembled shard, as the manifest will list it."""

    name: str
    samples: int
    episodes: int
    bytes: int
    sha256: str
    skipped: list[str]
    skipped_ids: list[Union[str, int]]  # noqa: UP007


_PLAN = TypeAdapter(PlanDoc)
_UNIT = TypeAdapter(UnitResult)
_SHARD = TypeAdapter(ShardRecord)


def _work_fix(path: Path) -> str:
    work = next((p for p in path.parents if p.name == ".cotrain-work"), path.parent)
    return (f"the conversion's work folder was damaged outside cotrain; remove {work} and run the conversion "
            "again (what it held is redone, with the same bytes), or pass --overwrite to start over")


def _read(path: Path, fix: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise WorkFileError(path, f"not valid JSON ({exc.msg.removesuffix(' at')}, {where}); {fix}") from None
    except ValueError as exc:  # UnicodeDecodeError: not text at all
        raise WorkFileError(path, f"not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise WorkFileError(path, f"unreadable ({exc.strerror or exc}); {fix}") from None


def _checked(adapter: TypeAdapter[T], path: Path) -> T:
    fix = _work_fix(path)
    try:
        return adapter.validate_python(_read(path, fix), strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise WorkFileError(path, f"field {field!r}: {err['msg']}; {fix}") from None


def load_plan(path: Path) -> PlanDoc:
    """Read and check `.cotrain-work/plan.json`."""
    return _checked(_PLAN, path)


def load_unit_result(path: Path, index: int) -> UnitResult:
    """Read and check a unit's result file; it must record unit `index`."""
    result = _checked(_UNIT, path)
    if result["index"] != index:
        raise WorkFileError(path, f"records unit {result['index']}, expected {index}; {_work_fix(path)}")
    if result["skipped"] is None and "data_bytes" not in result:
        raise WorkFileError(path, f"field 'data_bytes': missing for a converted unit; {_work_fix(path)}")
    tar = path.with_suffix(".tar")
    if result["skipped"] is None and (not tar.is_file() or tar.stat().st_size < result["data_bytes"]):
        raise WorkFileError(tar, f"missing or shorter than its unit result says; {_work_fix(path)}")
    return result


def load_shard_record(path: Path, name: str) -> ShardRecord:
    """Read and check an assembled shard's record; it must name shard `name`."""
    record = _checked(_SHARD, path)
    if record["name"] != name or len(record["skipped"]) != len(record["skipped_ids"]):
        raise WorkFileError(path, f"is not the record of {name}; {_work_fix(path)}")
    return record


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProvenanceDoc(TypedDict):
    """The manifest's `provenance` as a plan fixes it."""

    converter: str
    arguments: dict[str, Any]
    source_fingerprint: str
    cotrain_version: str


class ManifestHeader(InfoDoc):
    """The manifest fields a plan fixes before any shard is converted: the dataset info, a name, provenance."""

    name: str
    provenance: ProvenanceDoc


def manifest_header(plan: PlanDoc) -> ManifestHeader:
    """The manifest fields a plan fixes before any shard is converted (JSON values)."""
    info = plan["info"]
    return ManifestHeader(
        name=plan["name"],
        modality=info["modality"],
        embodiment=info.get("embodiment"),
        state_names=list(info.get("state_names") or []),
        action_names=list(info.get("action_names") or []),
        fps=info.get("fps"),
        horizon=info.get("horizon"),
        cameras=list(info.get("cameras") or []),
        image_size=list(size) if (size := info.get("image_size")) else None,
        extra=dict(info.get("extra") or {}),
        provenance=ProvenanceDoc(converter=plan["converter"], arguments=plan["arguments"],
                                 source_fingerprint=plan["fingerprint"], cotrain_version=plan["cotrain_version"]),
    )


def finished_matches(manifest: Path, plan: PlanDoc) -> bool:
    """Whether the intact `manifest.json` there is this plan's conversion (False: another one).

    The manifest must validate, every shard it lists must be there with its listed size (a stat each;
    `cotrain validate` hashes them), and the fields the plan fixes must be the plan's: a manifest that
    lost or changed one of them is damaged, not "already converted". The name (the source folder's
    by default) and the cotrain version may differ, as they did before this check.
    """
    from cotrain.dataset.manifest import load_manifest

    fix = "the dataset here is damaged; pass --overwrite to convert again into this folder, or choose a new OUT"
    _read(manifest, fix)
    try:
        done = load_manifest(manifest.parent)
    except DataError as exc:
        raise WorkFileError(manifest, f"{exc.problem}; {fix}") from None
    header = manifest_header(plan)
    have, want = done.model_dump(mode="json"), json.loads(json.dumps(header))
    if (have["provenance"]["arguments"], have["provenance"]["source_fingerprint"]) != (
            want["provenance"]["arguments"], want["provenance"]["source_fingerprint"]):
        return False
    for shard in done.shards:
        path = manifest.parent / shard.name
        if not path.is_file() or path.stat().st_size != shard.bytes:
            raise WorkFileError(path, f"missing, or not the {shard.bytes} bytes {manifest.name} lists; {fix}")
    del have["provenance"]["cotrain_version"], want["provenance"]["cotrain_version"]
    changed = next((k for k in sorted(header) if k != "name" and have[k] != want[k]), None)
    if changed is not None:
        raise WorkFileError(manifest, f"field {changed!r} is {_short(have[changed])}, this conversion writes "
                                      f"{_short(want[changed])} (the manifest was edited or damaged, or another "
                                      "cotrain version wrote it); pass --overwrite to convert again into this "
                                      "folder, or choose a new OUT")
    return True
