"""Rules shared by the image-text converters (`coco`, `img2dataset`, `hf-parquet`).

A vision-language sample holds its image(s) as JPEG members (`image.jpg`, or `image_0.jpg`,
`image_1.jpg`, ... when a record has several), then either `prompt.txt` + `target.txt` (a caption or
an answer) or `conversation.json` (a list of `{"role": "user"|"assistant", "content": str}`), and
`meta.json` (dataset, modality, the record's source id, stored image size). There are no state or
action arrays, so these converters never report episodes and the manifest carries no norm stats.

Records are grouped into units of `RECORDS_PER_UNIT` in the source's own order; records that cannot
become a sample (no image, failed download, no caption) are counted per reason in the unit refs, so
`describe` can report them in the manifest's `extra` without a second pass over the source.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from cotrain.convert.spec import DatasetInfo, Unit, VisionLanguageOptions
from cotrain.dataset import keys
from cotrain.dataset.shards import encode_json
from cotrain.errors import DataError
from cotrain.media.image import image_problem, parse_size, to_jpeg

# 256 records keep a unit at a few MB of JPEGs and give a 100k-image set ~400 units to spread over workers.
RECORDS_PER_UNIT = 256
IMAGE_CAMERA = "image"
USER, ASSISTANT = "user", "assistant"

CaptionsMode = Literal["first", "all"]


def captions_field() -> Any:  # noqa: ANN401  (a pydantic FieldInfo)
    """The `--captions` option, shared by the converters whose records carry several captions."""
    return Field("first", description="Several captions per image: 'first' makes one sample per image, "
                                      "'all' one sample per caption.")


def camera_names(count: int, *, indexed: bool) -> list[str]:
    """`image` for a record's single image; `image_0`..`image_{n-1}` for a source with image lists,
    even for a list of one, so a camera name means the same position in every sample."""
    return [f"{IMAGE_CAMERA}_{i}" for i in range(count)] if indexed else [IMAGE_CAMERA]


def dataset_name(src: Path, opts: VisionLanguageOptions) -> str:
    """The name written into every sample's meta; the same as the manifest's `name`."""
    return opts.name or src.resolve().name


def vl_info(opts: VisionLanguageOptions, *, cameras: Sequence[str], units: Sequence[Unit[VlRefT]],
            extra: Mapping[str, Any] | None = None) -> DatasetInfo:
    """The DatasetInfo of an image-text source; adds the counts of records left out, if any."""
    info_extra = dict(extra or {})
    dropped = dropped_counts(units)
    if dropped:
        info_extra["records_left_out"] = dropped
    return DatasetInfo(modality=keys.VISION_LANGUAGE, cameras=list(cameras),
                       image_size=parse_size(opts.image_size), extra=info_extra)


@dataclass(frozen=True)
class StoredImage:
    """One image as written into a sample: JPEG bytes and their pixel size."""

    jpeg: bytes
    width: int
    height: int


def store_image(data: bytes, opts: VisionLanguageOptions, *, file: object, record: object,
                key: str | None = None) -> StoredImage:
    """Source image bytes (any PIL format) -> JPEG within `--image-size`.

    JPEGs that need no resize pass through byte for byte (see `imaging.to_jpeg`); they are still
    decoded in full, so a truncated or corrupt image fails here, naming the record.
    """
    from PIL import Image, UnidentifiedImageError

    if problem := image_problem(data):
        raise DataError(file, problem, episode=record, key=key)
    try:
        jpeg = to_jpeg(data, parse_size(opts.image_size), opts.jpeg_quality)
        with Image.open(io.BytesIO(jpeg)) as img:
            width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(file, f"undecodable image ({len(data)} bytes): {exc}", episode=record, key=key) from None
    return StoredImage(jpeg, width, height)


def image_members(images: Sequence[StoredImage], *, indexed: bool) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Members `image.jpg` (or `image_<i>.jpg` when indexed), and the size fields for meta.json."""
    if not indexed and len(images) != 1:
        raise ValueError(f"{len(images)} images need indexed names")
    names = camera_names(len(images), indexed=indexed)
    members = {keys.camera_member(n): im.jpeg for n, im in zip(names, images)}
    if not indexed:
        return members, {"width": images[0].width, "height": images[0].height}
    return members, {"num_images": len(images), "image_sizes": [[im.width, im.height] for im in images]}


def caption_sample(images: Sequence[StoredImage], prompt: str, target: str, meta: Mapping[str, Any], *,
                   indexed: bool = False) -> dict[str, bytes]:
    """Members of a prompt/target sample (captioning or single-turn question answering)."""
    members, sizes = image_members(images, indexed=indexed)
    members[keys.PROMPT] = prompt.encode("utf-8")
    members[keys.TARGET] = target.encode("utf-8")
    members[keys.META] = encode_json({**meta, **sizes, "modality": keys.VISION_LANGUAGE})
    return members


def conversation_sample(images: Sequence[StoredImage], turns: Sequence[Mapping[str, str]],
                        meta: Mapping[str, Any], *, indexed: bool = False) -> dict[str, bytes]:
    """Members of a multi-turn sample: `conversation.json` instead of prompt/target."""
    members, sizes = image_members(images, indexed=indexed)
    members[keys.CONVERSATION] = encode_json([{"role": t["role"], "content": t["content"]} for t in turns])
    members[keys.META] = encode_json({**meta, **sizes, "modality": keys.VISION_LANGUAGE})
    return members


def clean_text(value: object, *, file: object, record: object, key: str) -> str:
    """A caption or answer: a non-empty string with surrounding whitespace removed."""
    if not isinstance(value, str):
        raise DataError(file, f"expected a string, got {type(value).__name__}: {value!r:.60}", episode=record, key=key)
    text = value.strip()
    if not text:
        raise DataError(file, "empty text", episode=record, key=key)
    return text


class VlRef(TypedDict):
    """What every image-text unit's `ref` holds besides its converter's locator."""

    dropped: NotRequired[dict[str, int]]  # records left out before (or, last unit, after) it, per reason


RecordT = TypeVar("RecordT")
VlRefT = TypeVar("VlRefT", bound=VlRef)


@dataclass
class UnitBuilder(Generic[RecordT, VlRefT]):
    """Groups records into units in source order, counting records left out per reason.

    Args:
        make_ref: records of one unit -> (unit id, ref); called when a unit closes.
        per_unit: records per unit before it closes on its own.
    """

    make_ref: Callable[[list[RecordT]], tuple[str, VlRefT]]
    per_unit: int = RECORDS_PER_UNIT
    units: list[Unit[VlRefT]] = field(default_factory=list)
    _records: list[RecordT] = field(default_factory=list)
    _samples: int = 0
    _dropped: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> list[RecordT]:
        """Records of the unit being filled."""
        return self._records

    def add(self, record: RecordT, samples: int = 1) -> None:
        self._records.append(record)
        self._samples += samples
        if len(self._records) >= self.per_unit:
            self.close()

    def drop(self, reason: str) -> None:
        self._dropped[reason] += 1

    def standalone(self, unit_id: str, est_samples: int, ref: VlRefT) -> None:
        """A unit of its own (e.g. a record known to be bad, so that skipping it loses nothing else)."""
        self.close()
        self.units.append(Unit(len(self.units), unit_id, est_samples, ref))

    def close(self) -> None:
        """End the current unit (also at file boundaries, so a unit never spans two files)."""
        if not self._records:
            return  # counts of dropped records carry over to the next unit
        unit_id, ref = self.make_ref(self._records)
        ref["dropped"] = dict(sorted(self._dropped.items()))
        self.units.append(Unit(len(self.units), unit_id, self._samples, ref))
        self._records, self._samples, self._dropped = [], 0, Counter()

    def finish(self) -> list[Unit[VlRefT]]:
        self.close()
        if self._dropped and self.units:  # records dropped after the last kept one
            last = self.units[-1]
            ref = last.ref.copy()
            ref["dropped"] = dict(sorted((Counter(_dropped(last.ref)) + self._dropped).items()))
            self.units[-1] = replace(last, ref=ref)
        return self.units


def _dropped(ref: VlRef) -> dict[str, int]:
    return ref.get("dropped", {})


def dropped_counts(units: Iterable[Unit[VlRefT]]) -> dict[str, int]:
    """Records dropped at listing time, summed over units by reason."""
    total: Counter[str] = Counter()
    for unit in units:
        total.update(_dropped(unit.ref))
    return dict(sorted(total.items()))


_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}
IMAGE_PLACEHOLDER = "<image>"


def _turn_text(content: object, *, file: object, record: object, key: str, turn: int) -> str:
    """A turn's text: a string, or the text parts of a `[{type, text}, ...]` content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "\n".join(str(p.get("text") or "") for p in content if p.get("type", "text") == "text")
    raise DataError(file, f"turn {turn} content is {type(content).__name__}, not text", episode=record, key=key)


def normalise_conversation(turns: object, *, file: object, record: object, key: str) -> list[dict[str, str]]:
    """LLaVA/ShareGPT (`from`/`value`) or chat (`role`/`content`) turns -> user/assistant turns.

    Roles human/user map to user and gpt/assistant to assistant; `<image>` placeholders are removed
    from user turns (the images are stored as members); turns must alternate, user first, and end
    with an answer, since a trailing question teaches nothing.
    """
    if not isinstance(turns, list) or not turns:
        raise DataError(file, f"expected a non-empty list of turns, got {turns!r:.60}", episode=record, key=key)
    out: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(file, f"turn {i} is {type(turn).__name__}, not an object", episode=record, key=key)
        raw_role = turn.get("from") or turn.get("role")
        role = _ROLES.get(str(raw_role).lower())
        if role is None:
            raise DataError(file, f"turn {i} has role {raw_role!r}; known roles: {', '.join(_ROLES)}",
                            episode=record, key=key)
        expected = USER if i % 2 == 0 else ASSISTANT
        if role != expected:
            raise DataError(file, f"turn {i} is from the {role}, expected the {expected} "
                                  "(turns must alternate, user first)", episode=record, key=key)
        content = turn.get("value") if turn.get("value") is not None else turn.get("content")
        text = _turn_text(content, file=file, record=record, key=key, turn=i)
        text = (text.replace(IMAGE_PLACEHOLDER, "") if role == USER else text).strip()
        if role == ASSISTANT and not text:
            raise DataError(file, f"turn {i} (assistant) is empty", episode=record, key=key)
        out.append({"role": role, "content": text})
    if out[-1]["role"] != ASSISTANT:
        raise DataError(file, "conversation ends with a user turn (no answer)", episode=record, key=key)
    return out
