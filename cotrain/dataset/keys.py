"""Names of sample members, modalities and the key rule: the on-disk contract in one place.

A WebDataset reader splits a tar member name at the first dot of its basename, so sample keys must
not contain dots; extensions may (`front.jpg`, `state.npy`).
"""

from __future__ import annotations

import re

META = "meta.json"
STATE = "state.npy"
ACTIONS = "actions.npy"
ACTIONS_VALID = "actions_valid.npy"
INSTRUCTION = "instruction.txt"
PROMPT = "prompt.txt"
TARGET = "target.txt"
CONVERSATION = "conversation.json"
ACTION_TOKENS = "action_tokens.npy"
IMAGE_EXT = ".jpg"

ROBOT = "robot"
HUMAN_VIDEO = "human_video"
VISION_LANGUAGE = "vision_language"
ANNOTATION = "annotation"
ACTION_TOKENS_MODALITY = "action_tokens"
MODALITIES = (ROBOT, HUMAN_VIDEO, VISION_LANGUAGE, ANNOTATION, ACTION_TOKENS_MODALITY)

# Extensions that would deserialise arbitrary objects; never written, refused on read.
FORBIDDEN_EXTS = ("pyd", "pickle", "pkl", "pth", "pt")

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_CAMERA_RE = re.compile(r"^[a-z0-9_]+$")


def is_valid_key(key: str) -> bool:
    """A sample key: letters, digits, '_' and '-', no dots, no path separators."""
    return bool(_KEY_RE.match(key)) and len(key) <= 200


def normalise_camera(name: str) -> str:
    """`observation.images.Front-Cam` -> `front_cam`: the last dotted part, lower case, [a-z0-9_]."""
    last = name.split(".")[-1].split("/")[-1]
    clean = re.sub(r"[^a-z0-9_]+", "_", last.lower()).strip("_")
    return clean or "camera"


def is_valid_camera(name: str) -> bool:
    """Whether `name` is a valid camera name."""
    return bool(_CAMERA_RE.match(name))


def camera_member(camera: str) -> str:
    """The member extension of a camera's JPEG: `front` -> `front.jpg`."""
    return camera + IMAGE_EXT


def sanitise_key_part(text: str) -> str:
    """Map an arbitrary source id into the key alphabet (dots and slashes become '-')."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "-", text).strip("-") or "x"
