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
from typing import Any, Optional

from pydantic import TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from cotrain.errors import DataError

__all__ = ["PlanDoc", "ShardRecord", "UnitResult", "load_plan", "load_provenance", "load_shard_record",
           "load_unit_result"]


class PlanDoc(TypedDict):
    """`.cotrain-work/plan.json`: what is being converted, with which arguments, into which shards."""

    converter: str
    name: str
    info: dict[str, Any]
    arguments: dict[str, Any]
    fingerprint: str
    cotrain_version: str
    shards: list[list[int]]


class UnitResult(TypedDict):
    """`.cotrain-work/units/uNNNNNNNN.json`: one converted (or skipped) unit."""

    index: int
    id: str
    samples: int
    episodes: int
    skipped: Optional[str]  # noqa: UP007 (pydantic evaluates this on Python 3.10 too)
    data_bytes: NotRequired[int]


class ShardRecord(TypedDict):
    """`.cotrain-work/shards/shard-NNNNNN.tar.json`: an assembled shard, as the manifest will list it."""

    name: str
    samples: int
    episodes: int
    bytes: int
    sha256: str
    skipped: list[str]
    skipped_ids: list[str]


_PLAN = TypeAdapter(PlanDoc)
_UNIT = TypeAdapter(UnitResult)
_SHARD = TypeAdapter(ShardRecord)


def _work_fix(path: Path) -> str:
    work = next((p for p in path.parents if p.name == ".cotrain-work"), path.parent)
    return (f"the conversion's work folder was damaged outside cotrain; remove {work} and run the conversion "
            "again (what it held is redone, with the same bytes), or pass --overwrite to start over")


def _read(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise DataError(path, f"not valid JSON ({exc.msg.removesuffix(' at')}, {where}); {fix}") from None
    except ValueError as exc:  # UnicodeDecodeError: not text at all
        raise DataError(path, f"not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise DataError(path, f"unreadable ({exc.strerror or exc}); {fix}") from None


def _checked(adapter: TypeAdapter[Any], path: Path) -> Any:
    fix = _work_fix(path)
    try:
        return adapter.validate_python(_read(path, fix), strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise DataError(path, f"field {field!r}: {err['msg']}; {fix}") from None


def load_plan(path: Path) -> PlanDoc:
    return _checked(_PLAN, path)


def load_unit_result(path: Path, index: int) -> UnitResult:
    result: UnitResult = _checked(_UNIT, path)
    if result["index"] != index:
        raise DataError(path, f"records unit {result['index']}, expected {index}; {_work_fix(path)}")
    return result


def load_shard_record(path: Path, name: str) -> ShardRecord:
    record: ShardRecord = _checked(_SHARD, path)
    if record["name"] != name or len(record["skipped"]) != len(record["skipped_ids"]):
        raise DataError(path, f"is not the record of {name}; {_work_fix(path)}")
    return record


def load_provenance(manifest: Path) -> dict[str, Any]:
    """The `provenance` of an existing `manifest.json` (empty when it has none)."""
    fix = "the dataset here is damaged; pass --overwrite to convert again into this folder, or choose a new OUT"
    doc = _read(manifest, fix)
    provenance = doc.get("provenance", {}) if isinstance(doc, dict) else None
    if not isinstance(provenance, dict):
        raise DataError(manifest, f"not a cotrain manifest (no provenance object); {fix}")
    return provenance
