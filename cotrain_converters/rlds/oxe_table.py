"""The declarative standardisation table of RLDS / Open X-Embodiment datasets, and its application.

Open X-Embodiment datasets agree on the RLDS skeleton (`steps/{observation, action, is_first,
is_last, ...}`) but not on the names inside: cameras are `image`, `image_0`, `rgb_static`,
`exterior_image_1_left`; the state is one vector, a slice of one, or several vectors; the action is
a tensor or a dict (`world_vector`, `rotation_delta`, ...); the instruction is a step feature or an
observation feature; rates range from 3 Hz (RT-1) to 15 Hz (DROID, TACO). `oxe_standardize.yaml`
(shipped data, read with yaml.safe_load) states these facts per dataset; `--table FILE` adds or
overrides entries field by field. A dataset without an entry, or an entry that leaves a field out,
gets generic detection: `observation/state` or `observation/proprio`, `action`, every RGB image,
`language_instruction` or `observation/natural_language_instruction`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cotrain.dataset import keys
from cotrain.errors import ConfigError, DataError, suggest
from cotrain_converters.rlds.tfds_features import FLOAT_DTYPES, INT_DTYPES, FeatureSpec, check_decodable

__all__ = ["KeyRef", "TableEntry", "Standard", "load_table", "find_entry", "standardise"]

TABLE_FILE = "oxe_standardize.yaml"
_REF_RE = re.compile(r"^(?P<key>[A-Za-z0-9_\-/.]+?)(?:\[(?P<start>\d*):(?P<stop>\d*)\])?$")
_GENERIC_STATE = ("observation/state", "observation/proprio")
_GENERIC_LANGUAGE = ("language_instruction", "observation/natural_language_instruction")


@dataclass(frozen=True)
class KeyRef:
    """A step feature, optionally a slice [start:stop] of its flattened per-step values."""

    key: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        """`observation/robot_obs[0:7]` -> KeyRef('observation/robot_obs', 0, 7); ValueError otherwise."""
        match = _REF_RE.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not KEY or KEY[start:stop]")
        start, stop = match["start"], match["stop"]
        return cls(match["key"].strip("/"), int(start) if start else None, int(stop) if stop else None)

    @property
    def full(self) -> str:
        """The Example key (step features live under `steps/`)."""
        return f"steps/{self.key}"


class TableEntry(BaseModel):
    """One dataset's row of the table; fields left out fall back to generic detection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aliases: list[str] = Field(default_factory=list, description="Other dataset names of this entry.")
    embodiment: str | None = Field(None, description="Default --embodiment.")
    fps: float | None = Field(None, gt=0, description="Nominal control rate in Hz.")
    state: list[str] | None = Field(None, description="Keys (relative to steps/) concatenated into the state.")
    action: list[str] | None = Field(None, description="Keys concatenated into the action.")
    cameras: dict[str, str] | None = Field(None, description="Image key -> stored camera name.")
    language: str | None = Field(None, description="Instruction key; '' when the dataset has none.")
    action_convention: Literal["delta_eef", "abs_eef", "eef_velocity", "delta_joint", "abs_joint",
                               "joint_velocity"] | None = None
    state_names: list[str] | None = None
    action_names: list[str] | None = None
    notes: str | None = None

    @field_validator("state", "action")
    @classmethod
    def _refs(cls, value: list[str] | None) -> list[str] | None:
        for text in value or []:
            KeyRef.parse(text)
        return value


def _read_table(text: str, where: str, as_json: bool) -> dict[str, TableEntry]:
    try:
        raw = json.loads(text) if as_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--table {where}: not valid {'JSON' if as_json else 'YAML'}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--table {where}: expected a mapping of dataset name -> entry")
    table = {}
    for name, body in raw.items():
        try:
            table[str(name)] = TableEntry.model_validate(body or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "?"
            raise ConfigError(f"--table {where}: entry {name!r} field {field!r}: {err['msg']}") from None
    return table


def load_table(extra: str | Path | None = None) -> dict[str, TableEntry]:
    """The shipped table, with the entries of `extra` (YAML or .json) merged in field by field."""
    shipped = resources.files("cotrain_converters.rlds").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    table = _read_table(shipped, TABLE_FILE, as_json=False)
    if extra is None:
        return table
    path = Path(extra)
    if not path.is_file():
        raise ConfigError(f"--table {str(path)!r}: no such file")
    for name, entry in _read_table(path.read_text(encoding="utf-8"), str(path), path.suffix == ".json").items():
        base = find_entry(table, name)
        if base is None:
            table[name] = entry
        else:
            table[base[0]] = base[1].model_copy(update=entry.model_dump(exclude_unset=True))
    return table


def find_entry(table: dict[str, TableEntry], name: str) -> tuple[str, TableEntry] | None:
    """(entry name, entry) for a dataset name or alias, None when the table does not know it."""
    if name in table:
        return name, table[name]
    for key, entry in table.items():
        if name in entry.aliases:
            return key, entry
    return None


@dataclass(frozen=True)
class Standard:
    """How one dataset's Example keys become state, actions, cameras and instruction."""

    entry: str | None
    state: tuple[KeyRef, ...]
    action: tuple[KeyRef, ...]
    cameras: dict[str, str]
    language: str | None
    state_names: list[str]
    action_names: list[str]
    fps: float | None = None
    embodiment: str | None = None
    action_convention: str | None = None
    notes: str | None = None


def _missing(key: str, features: dict[str, FeatureSpec], path: Path, what: str) -> DataError:
    near = suggest(key, [k for k in features if k.startswith("steps/")])
    return DataError(path, f"{what}: no feature {key!r}{near}", key=key)


def _names(refs: tuple[KeyRef, ...], features: dict[str, FeatureSpec], path: Path, what: str) -> list[str]:
    """Checks each numeric ref against features.json; returns one name per resulting dimension."""
    names: list[str] = []
    for ref in refs:
        spec = features.get(ref.full)
        if spec is None:
            raise _missing(ref.full, features, path, what)
        check_decodable(spec, path)
        if spec.kind not in ("tensor", "class_label") or spec.dtype not in FLOAT_DTYPES + INT_DTYPES:
            raise DataError(path, f"{what}: {ref.full!r} is a {spec.kind} of {spec.dtype}, not numbers", key=ref.full)
        if -1 in spec.shape:
            raise DataError(path, f"{what}: {ref.full!r} has a variable shape {list(spec.shape)}", key=ref.full)
        start, stop = ref.start or 0, spec.dims if ref.stop is None else ref.stop
        if not 0 <= start < stop <= spec.dims:
            raise DataError(path, f"{what}: slice [{start}:{stop}] is out of range for {ref.full!r} with "
                                  f"{spec.dims} values per step", key=ref.full)
        leaf = ref.key.split("/")[-1]
        names += [leaf] if spec.dims == 1 else [f"{leaf}_{i}" for i in range(start, stop)]
    return names


def _generic_state(features: dict[str, FeatureSpec], path: Path) -> tuple[KeyRef, ...]:
    for key in _GENERIC_STATE:
        if f"steps/{key}" in features:
            return (KeyRef(key),)
    numeric = [k for k, s in features.items() if k.startswith("steps/observation/") and s.kind == "tensor"]
    raise DataError(path, f"no state feature (looked for {', '.join(_GENERIC_STATE)}); numeric observation "
                          f"features: {', '.join(numeric) or 'none'}; name them in a --table entry",
                    key="steps/observation/state")


def _generic_action(features: dict[str, FeatureSpec], path: Path) -> tuple[KeyRef, ...]:
    if "steps/action" in features:
        return (KeyRef("action"),)
    parts = [k for k in features if k.startswith("steps/action/")]
    raise DataError(path, f"'steps/action' is not one tensor (parts: {', '.join(parts) or 'none'}); list the parts "
                          "to concatenate in a --table entry", key="steps/action")


def _cameras(entry: TableEntry, features: dict[str, FeatureSpec], path: Path) -> dict[str, str]:
    if entry.cameras is None:
        images = [k for k, s in features.items() if k.startswith("steps/") and s.is_rgb_image]
        for key in images:
            check_decodable(features[key], path)
        leaves = [keys.normalise_camera(k.split("/")[-1]) for k in images]
        return {k: (leaf if leaves.count(leaf) == 1 else keys.normalise_camera(k[6:].replace("/", "_")))
                for k, leaf in zip(images, leaves, strict=True)}
    out = {}
    for key, name in entry.cameras.items():
        spec = features.get(f"steps/{key}")
        if spec is None:
            raise _missing(f"steps/{key}", features, path, "camera")
        check_decodable(spec, path)
        if not spec.is_rgb_image:
            raise DataError(path, f"camera {key!r} is not an RGB uint8 image ({spec.kind}, {spec.dtype}, "
                                  f"shape {list(spec.shape)})", key=spec.key)
        out[spec.key] = keys.normalise_camera(name)
    return out


def _language(entry: TableEntry, features: dict[str, FeatureSpec], path: Path) -> str | None:
    if entry.language == "":
        return None
    if entry.language is None:
        found = [f"steps/{k}" for k in _GENERIC_LANGUAGE if f"steps/{k}" in features]
        return found[0] if found else None
    key = f"steps/{entry.language}"
    spec = features.get(key)
    if spec is None:
        raise _missing(key, features, path, "language")
    if spec.kind != "text" and spec.dtype not in ("string", "str", "bytes", "object"):
        raise DataError(path, f"language {key!r} is a {spec.kind} of {spec.dtype}, not text", key=key)
    return key


def _check_names(given: list[str] | None, derived: list[str], field: str, entry: str | None) -> list[str]:
    if given is None:
        return derived
    if len(given) != len(derived):
        raise ConfigError(f"table entry {entry!r}: {field} has {len(given)} names for {len(derived)} dimensions")
    return list(given)


def standardise(dataset: str, table: dict[str, TableEntry], features: dict[str, FeatureSpec],
                path: Path) -> Standard:
    """Resolve the table entry of `dataset` (or generic detection) against its features.json."""
    found = find_entry(table, dataset)
    name, entry = found if found else (None, TableEntry())
    state = tuple(KeyRef.parse(t) for t in entry.state) if entry.state is not None else _generic_state(features, path)
    action = (tuple(KeyRef.parse(t) for t in entry.action) if entry.action is not None
              else _generic_action(features, path))
    return Standard(
        entry=name, state=state, action=action,
        cameras=_cameras(entry, features, path), language=_language(entry, features, path),
        state_names=_check_names(entry.state_names, _names(state, features, path, "state"), "state_names", name),
        action_names=_check_names(entry.action_names, _names(action, features, path, "action"), "action_names", name),
        fps=entry.fps, embodiment=entry.embodiment, action_convention=entry.action_convention, notes=entry.notes,
    )
