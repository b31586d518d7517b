"""The MCAP topic map: which topics hold state, actions, images and the instruction, and how a float
vector is read out of a decoded message.

A topic map comes from a small YAML file (`--topics`, read with `yaml.safe_load` into the frozen
`TopicMap` below, unknown keys rejected) and/or from CLI options, each given option replacing the
matching part of the file. It is resolved once, in `list_units`, and travels with every unit, so the
workers never re-read the file and an edited file cannot change a half-finished conversion.

Field paths are dot-separated keys with an optional index or slice on any part:
`position`, `data[0:7]`, `pose.position.x`, `joints[2]`. They work the same on ROS 2 messages (slotted
objects built by mcap_ros2), protobuf messages (fields by descriptor; `google.protobuf.Struct` by
key) and JSON objects. Several paths are concatenated in order into one vector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotrain.dataset import keys
from cotrain.errors import ConfigError, suggest

_PART_RE = re.compile(r"^(?P<key>[^.\[\]]+)(?:\[(?P<index>-?\d+)\]|\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
# Trailing topic parts that name a transport or stage, not a camera: `/cam_high/image_raw/compressed` -> cam_high.
_GENERIC_PARTS = {"compressed", "image", "image_raw", "image_rect", "image_color", "image_rect_color", "image_mono",
                  "raw"}
# Field used when none is given, by schema name: the conventional value field of common vector messages.
DEFAULT_FIELDS = {
    "sensor_msgs/msg/JointState": ("position",),
    "std_msgs/msg/Float64MultiArray": ("data",),
    "std_msgs/msg/Float32MultiArray": ("data",),
    "std_msgs/msg/Float64": ("data",),
    "std_msgs/msg/Float32": ("data",),
}


@dataclass(frozen=True)
class FieldPath:
    """A parsed field path: (key, index or slice or None) per part."""

    text: str
    parts: tuple[tuple[str, int | slice | None], ...]


def parse_field_path(text: str) -> FieldPath:
    """`pose.position[0:3]` -> FieldPath; ValueError on bad syntax."""
    parts: list[tuple[str, int | slice | None]] = []
    for raw in text.strip().split("."):
        m = _PART_RE.match(raw.strip())
        if m is None:
            raise ValueError(f"bad field path {text!r}: expected keys separated by '.', each optionally "
                             "followed by [i] or [a:b], e.g. position or data[0:7]")
        sel: int | slice | None = None
        if m["index"] is not None:
            sel = int(m["index"])
        elif m["start"] is not None:
            sel = slice(int(m["start"]) if m["start"] else None, int(m["stop"]) if m["stop"] else None)
        parts.append((m["key"], sel))
    return FieldPath(text.strip(), tuple(parts))


def camera_name_for(topic: str) -> str:
    """A camera name derived from its topic, skipping generic trailing parts like image_raw/compressed."""
    parts = [p for p in topic.split("/") if p]
    while len(parts) > 1 and parts[-1].lower() in _GENERIC_PARTS:
        parts.pop()
    return keys.normalise_camera(parts[-1]) if parts else "camera"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VectorSpec(_Frozen):
    """Where a float vector (state or action) comes from."""

    topic: str = Field(..., min_length=1, description="Topic name, e.g. /joint_states.")
    fields: tuple[str, ...] = Field(
        (), description="Field paths concatenated in order (default by schema: JointState position, "
                        "Float64MultiArray/Float64 data)."
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value

    @field_validator("fields")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_field_path(text)  # raises ValueError, which pydantic reports with the location
        return value


class InstructionSpec(_Frozen):
    """Where the instruction text comes from."""

    topic: str = Field(..., min_length=1, description="Topic name, e.g. /instruction.")
    field: str = Field("data", description="Field path of the text (std_msgs/msg/String: data).")

    @field_validator("field")
    @classmethod
    def _parse(cls, value: str) -> str:
        parse_field_path(value)
        return value


class TopicMap(_Frozen):
    """The topics of one embodiment's logs; the YAML file mirrors this model."""

    state: VectorSpec
    action: VectorSpec
    images: dict[str, str] = Field(default_factory=dict, description="Camera name -> image topic.")
    instruction: InstructionSpec | None = None
    episode_marker: str | None = Field(None, description="Each message on this topic starts a new episode.")

    @field_validator("state", "action", "instruction", mode="before")
    @classmethod
    def _topic_only(cls, value: Any) -> Any:
        return {"topic": value} if isinstance(value, str) else value

    @field_validator("images", mode="before")
    @classmethod
    def _name_cameras(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            names = [camera_name_for(str(t)) for t in value]
            if len(set(names)) != len(names):
                raise ValueError(f"topics {list(value)} give the camera names {names}; name them NAME=TOPIC")
            return dict(zip(names, value, strict=True))
        return value

    @model_validator(mode="after")
    def _check_cameras(self) -> TopicMap:
        for name in self.images:
            if not keys.is_valid_camera(name):
                raise ValueError(f"camera name {name!r} must match [a-z0-9_]+")
        topics = list(self.images.values())
        if len(set(topics)) != len(topics):
            raise ValueError(f"an image topic is listed twice: {topics}")
        return self

    def all_topics(self) -> dict[str, str]:
        """Role -> topic for every topic the map names (roles: state, action, image NAME, ...)."""
        roles = {"state": self.state.topic, "action": self.action.topic}
        roles.update({f"image {name}": topic for name, topic in self.images.items()})
        if self.instruction is not None:
            roles["instruction"] = self.instruction.topic
        if self.episode_marker is not None:
            roles["episode marker"] = self.episode_marker
        return roles


def _image_items(spec: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for item in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, topic = item.partition("=")
        if not sep:
            name, topic = camera_name_for(item), item
        if name.strip() in items:
            raise ConfigError(f"--image-topics: camera {name.strip()!r} is given twice; name them NAME=TOPIC")
        items[name.strip()] = topic.strip()
    return items


def _merge_vector(base: Any, topic: str | None, fields: str | None) -> Any:
    merged = {"topic": base} if isinstance(base, str) else dict(base or {})
    if topic:
        merged["topic"] = topic
    if fields:
        merged["fields"] = fields
    return merged or None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--topics {path}: cannot read the topic map ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--topics {path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--topics {path}: expected a mapping with keys state, action, images, instruction, "
                          f"episode_marker; got {type(data).__name__}")
    return data


def load_topic_map(opts: Any) -> TopicMap:
    """The topic map of `MCAPOptions`: the --topics YAML file, with the CLI topic options replacing its parts."""
    where = f"--topics {opts.topics}" if opts.topics else "topic options"
    data = _read_yaml(Path(opts.topics)) if opts.topics else {}
    for role in ("state", "action"):
        merged = _merge_vector(data.get(role), getattr(opts, f"{role}_topic"), getattr(opts, f"{role}_fields"))
        if merged is None or "topic" not in merged:
            raise ConfigError(f"no {role} topic: pass --{role}-topic TOPIC or set `{role}:` in a --topics YAML file")
        data[role] = merged
    if opts.image_topics:
        data["images"] = _image_items(opts.image_topics)
    if opts.instruction_topic:
        data["instruction"] = opts.instruction_topic
    if opts.episode_marker:
        data["episode_marker"] = opts.episode_marker
    try:
        return TopicMap.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "topic map"
        known = suggest(str(err["loc"][-1]), TopicMap.model_fields) if err["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{where}: {loc}: {err['msg']}{known}") from None


# --- reading values out of decoded messages ---------------------------------------------------------


def message_fields(obj: Any) -> list[str] | None:
    """Field names of a record-like value (ROS 2 message, protobuf message or Struct, JSON object)."""
    if isinstance(obj, Mapping):
        return [str(k) for k in obj]
    descriptor = getattr(obj, "DESCRIPTOR", None)
    if descriptor is not None and hasattr(obj, "ListFields"):
        if descriptor.full_name == "google.protobuf.ListValue":  # a list, read like one
            return None
        if descriptor.full_name == "google.protobuf.Struct":
            return list(obj.keys())
        return [f.name for f in descriptor.fields]
    slots = getattr(type(obj), "__slots__", None)
    return list(slots) if slots is not None and not isinstance(obj, (str, bytes)) else None


def field_value(obj: Any, path: FieldPath) -> Any:
    """The value at `path`; KeyError(message) naming the missing part and the fields that exist."""
    for key, sel in path.parts:
        fields = message_fields(obj)
        if fields is None or key not in fields:
            have = f"; fields: {', '.join(fields)}" if fields else f" (it is a {type(obj).__name__})"
            raise KeyError(f"has no field {key!r} in path {path.text!r}{suggest(key, fields or [])}{have}")
        obj = obj[key] if isinstance(obj, Mapping) or _is_struct(obj) else getattr(obj, key)
        if sel is not None:
            try:
                obj = list(obj)[sel]
            except (TypeError, IndexError):
                raise KeyError(f"cannot take [{_sel_text(sel)}] of field {key!r} in path {path.text!r} "
                               f"({type(obj).__name__}{_len_text(obj)})") from None
    return obj


def _is_struct(obj: Any) -> bool:
    descriptor = getattr(obj, "DESCRIPTOR", None)
    return descriptor is not None and getattr(descriptor, "full_name", "") == "google.protobuf.Struct"


def _sel_text(sel: int | slice) -> str:
    if isinstance(sel, int):
        return str(sel)
    return f"{'' if sel.start is None else sel.start}:{'' if sel.stop is None else sel.stop}"


def _len_text(obj: Any) -> str:
    try:
        return f" of length {len(obj)}"
    except TypeError:
        return ""


def to_vector(value: Any, path: FieldPath) -> np.ndarray:
    """A number or a (nested) list of numbers -> float64 [n]; ValueError for anything else."""
    if isinstance(value, (bytes, bytearray)):  # ROS 2 uint8[] decodes to bytes
        return np.frombuffer(bytes(value), np.uint8).astype(np.float64)
    if isinstance(value, (str, Mapping)) or message_fields(value) is not None:
        raise ValueError(f"field {path.text!r} is a {type(value).__name__}, not a number or a list of numbers")
    try:
        items = list(value) if hasattr(value, "__iter__") else [value]
        return np.asarray(items, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"field {path.text!r} is not a number or a list of numbers "
                         f"(got {type(value).__name__})") from None


def vector_names(decoded: Any, paths: Sequence[FieldPath]) -> list[str]:
    """Names of the vector's dimensions: JointState-like `name` lists where they fit, else path[i]."""
    names: list[str] = []
    for path in paths:
        n = len(to_vector(field_value(decoded, path), path))
        parent = decoded
        for key, _ in path.parts[:-1]:
            parent = parent[key] if isinstance(parent, Mapping) or _is_struct(parent) else getattr(parent, key)
        labels = _labels(parent, path, n)
        if labels is not None:
            names += labels if len(paths) == 1 else [f"{label}.{path.parts[-1][0]}" for label in labels]
        else:
            names += [path.text] if n == 1 else [f"{path.text}[{i}]" for i in range(n)]
    return names


def _labels(parent: Any, path: FieldPath, n: int) -> list[str] | None:
    # A sibling `name` list (JointState) labels the dimensions of an unsliced vector of the same length.
    if path.parts[-1][1] is not None or "name" not in (message_fields(parent) or []):
        return None
    labels = parent["name"] if isinstance(parent, Mapping) else getattr(parent, "name", None)
    if isinstance(labels, (list, tuple)) and len(labels) == n and all(isinstance(x, str) and x for x in labels):
        return list(labels)
    return None
