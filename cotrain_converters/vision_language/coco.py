"""COCO captions: one annotation JSON plus a folder of images -> captioning samples.

Layout (cocodataset/cocoapi): `SRC/annotations/captions_<split>.json` holds `images[{id, file_name,
width, height, coco_url, ...}]` and `annotations[{id, image_id, caption}]` (about five captions per
image, no `categories`); the images lie in `SRC/<split>/<file_name>`, e.g. `val2017/000000000139.jpg`.
Samples come in image-id order. `--captions first` gives one sample per image whose target is the
caption with the lowest annotation id; `--captions all` gives one sample per caption (same image).
Whether an image file exists is checked while listing, so a missing file fails before any output is
written, or, with `--on-bad-episode skip`, becomes a one-image unit that is skipped and listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field
from typing_extensions import NotRequired

from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink, VisionLanguageOptions
from cotrain.errors import DataError
from cotrain_converters.vision_language.common import (
    CaptionsMode,
    UnitBuilder,
    VlRef,
    caption_sample,
    captions_field,
    dataset_name,
    store_image,
    vl_info,
)

_CAPTIONS_RE = re.compile(r"^captions_(.+)\.json$")


class CocoOptions(VisionLanguageOptions):
    """Options of the COCO captions converter."""

    annotations: str | None = Field(
        None, description="Captions JSON (default: the single annotations/captions_*.json under SRC); "
                          "relative paths are taken from SRC.")
    images: str | None = Field(
        None, description="Image folder (default: SRC/<split> named after the JSON, e.g. val2017, else SRC/images); "
                          "relative paths are taken from SRC.")
    captions: CaptionsMode = captions_field()


def _root(src: Path) -> Path:
    """The COCO root: SRC itself, or for SRC = root/annotations/x.json the folder above `annotations`."""
    if src.is_dir():
        return src
    return src.parent.parent if src.parent.name == "annotations" else src.parent


def _annotation_file(src: Path, opts: CocoOptions) -> Path:
    if opts.annotations:
        path = _root(src) / opts.annotations
        if not path.is_file():
            raise DataError(path, "annotation file not found (--annotations; relative paths are taken from SRC)")
        return path
    if src.is_file():
        return src
    found = sorted((src / "annotations").glob("captions_*.json"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise DataError(src / "annotations", f"expected exactly one captions_*.json, found {listed}; "
                                             "choose one with --annotations")
    return found[0]


def _images_dir(src: Path, opts: CocoOptions, annotations: Path) -> Path:
    root = _root(src)
    if opts.images:
        candidates = [root / opts.images]
    else:
        match = _CAPTIONS_RE.match(annotations.name)
        candidates = ([root / match.group(1)] if match else []) + [root / "images"]
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DataError(root, f"image folder not found (tried {tried}); choose one with --images")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise DataError(path, "not a COCO annotation file: expected an object with 'images' and 'annotations' lists")
    return doc


def _captions_by_image(path: Path, doc: dict[str, Any], image_ids: set[int]) -> dict[int, list[tuple[int, str]]]:
    """image id -> [(annotation id, caption)] sorted by annotation id."""
    out: dict[int, list[tuple[int, str]]] = {}
    for ann in doc["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not isinstance(ann_id, int):
            raise DataError(path, f"annotation without an integer 'id': {ann!r:.80}", key="annotations")
        if "caption" not in ann:
            raise DataError(path, "annotation has no 'caption' (instances_* and person_keypoints_* files have none; "
                                  "use a captions_*.json)", episode=f"annotation {ann_id}", key="caption")
        if not isinstance(ann["caption"], str):
            raise DataError(path, f"caption is {type(ann['caption']).__name__}, not a string",
                            episode=f"annotation {ann_id}", key="caption")
        if ann.get("image_id") not in image_ids:
            raise DataError(path, f"image_id {ann.get('image_id')!r} is not in 'images'",
                            episode=f"annotation {ann_id}", key="image_id")
        out.setdefault(ann["image_id"], []).append((ann_id, ann["caption"]))
    return {k: sorted(v) for k, v in out.items()}


def _images(path: Path) -> list[tuple[int, str, list[tuple[int, str]]]]:
    """[(image id, file name, captions)] sorted by image id."""
    doc = _load_json(path)
    images: dict[int, str] = {}
    for img in doc["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise DataError(path, f"image entry needs an integer 'id' and a 'file_name': {img!r:.80}", key="images")
        if img["id"] in images:
            raise DataError(path, f"image id {img['id']} appears twice", key="images")
        name = PurePosixPath(img["file_name"])
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise DataError(path, f"file_name {img['file_name']!r} must be a relative path inside the image folder",
                            episode=f"image {img['id']}", key="file_name")
        images[img["id"]] = img["file_name"]
    captions = _captions_by_image(path, doc, set(images))
    return [(i, images[i], captions.get(i, [])) for i in sorted(images)]


# One image of a unit: (image id, file name in the image folder, [(caption id, caption)] kept).
CocoImage = tuple[int, str, list[tuple[int, str]]]


class CocoRef(VlRef):
    """A unit's `ref`: images of the image folder with their captions, or one image file found missing."""

    images_dir: NotRequired[str]
    images: NotRequired[list[CocoImage]]
    missing: NotRequired[str]  # the missing image's path (a unit that fails when converted)


def list_units(src: Path, opts: CocoOptions) -> list[Unit[CocoRef]]:
    """Units of captioned images in groups; an image whose file is missing gets a unit of its own."""
    annotations = _annotation_file(src, opts)
    folder = _images_dir(src, opts, annotations)

    def make_ref(records: list[CocoImage]) -> tuple[str, CocoRef]:
        return f"images {records[0][0]}..{records[-1][0]}", CocoRef(images_dir=str(folder), images=records)

    builder = UnitBuilder(make_ref)
    for image_id, file_name, captions in _images(annotations):
        kept = [(a, c.strip()) for a, c in captions if c.strip()]
        for _ in range(len(captions) - len(kept)):
            builder.drop("empty caption")
        if not kept:
            builder.drop("image without captions")
            continue
        kept = kept if opts.captions == "all" else kept[:1]
        if not (folder / file_name).is_file():
            if opts.on_bad_episode == "raise":
                raise DataError(folder / file_name, "image file not found", episode=f"image {image_id}")
            builder.standalone(f"image {image_id}", len(kept), CocoRef(missing=str(folder / file_name)))
            continue
        builder.add((image_id, file_name, kept), samples=len(kept))
    return builder.finish()


def describe(src: Path, opts: CocoOptions, units: Sequence[Unit[CocoRef]]) -> DatasetInfo:
    """The vision-language dataset info of a COCO caption set."""
    annotations = _annotation_file(src, opts)
    images = sum(len(u.ref.get("images", ())) for u in units)
    return vl_info(opts, cameras=["image"], units=units,
                   extra={"annotation_file": annotations.name, "source_images": images})


def convert_unit(src: Path, opts: CocoOptions, unit: Unit[CocoRef], sink: UnitSink) -> None:
    """Write the caption samples of one group of images."""
    if "missing" in unit.ref:
        raise DataError(unit.ref["missing"], "image file not found", episode=unit.id)
    folder = Path(unit.ref["images_dir"])
    name = dataset_name(src, opts)
    for image_id, file_name, captions in unit.ref["images"]:
        path = folder / file_name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(path, f"cannot read image: {exc.strerror}", episode=f"image {image_id}") from None
        image = store_image(data, opts, file=path, record=f"image {image_id}")
        for caption_id, caption in captions:
            meta = {"dataset": name, "source_id": str(image_id), "image_id": image_id, "caption_id": caption_id,
                    "file_name": file_name}
            sink.add(caption_sample([image], opts.prompt, caption, meta))


CONVERTER = Converter("coco", "COCO captions: annotation JSON plus an image folder.", CocoOptions,
                      list_units, describe, convert_unit)
