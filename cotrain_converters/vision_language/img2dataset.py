"""img2dataset WebDataset output: `{shard:05d}.tar` files of image-caption pairs -> captioning samples.

Layout (rom1504/img2dataset `writer.py`): each tar holds per sample `{key}.jpg` (or the configured
encode format: png, webp), `{key}.txt` (the caption, when captions were saved) and `{key}.json`
(`url, caption, key, status, error_message, width, height, original_width, original_height, exif`,
maybe `sha256`), written with webdataset's TarWriter; keys are the shard number followed by the index
inside the shard. Beside each tar lie `{shard}.parquet` and `{shard}_stats.json`, which are ignored.
img2dataset writes only successful downloads into the tars, but records whose json `status` is not
`success`, that have no image member or no caption, are left out here and counted per reason in the
manifest's `extra.records_left_out`.

Units are runs of up to 256 kept records (and at most 64 MiB) inside one tar, addressed by their byte
range, so a worker reads just that slice of the tar instead of scanning it from the start.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import NotRequired

from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink, VisionLanguageOptions
from cotrain.errors import DataError
from cotrain_converters.source_files import tar_damage
from cotrain_converters.vision_language.common import (
    RECORDS_PER_UNIT,
    UnitBuilder,
    VlRef,
    caption_sample,
    dataset_name,
    store_image,
    vl_info,
)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_UNIT_BYTES = 64 << 20  # bounds a worker's memory: a unit's byte range is read at once
_BLOCK = tarfile.BLOCKSIZE


class Img2DatasetOptions(VisionLanguageOptions):
    """Options of the img2dataset converter (all vision-language options)."""


@dataclass
class _Record:
    """The members of one key, with the byte range of the record in its tar."""

    key: str
    start: int
    end: int = 0
    members: dict[str, bytes | None] = field(default_factory=dict)  # ext -> bytes (None: not read)

    @property
    def image_ext(self) -> str | None:
        return next((e for e in IMAGE_EXTS if e in self.members), None)


def _tars(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(src.glob("*.tar"))


def _iter_records(tar: tarfile.TarFile, label: str, *, read_images: bool) -> Iterator[_Record]:
    """Records of adjacent members sharing a key; the json and txt members are always read."""
    current: _Record | None = None
    try:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            if current is not None and current.key != key:
                yield current
                current = None
            if current is None:
                current = _Record(key, info.offset)
            ext = ext.lower()
            wanted = ext in ("json", "txt") or (read_images and ext in IMAGE_EXTS)
            fh = tar.extractfile(info) if wanted else None
            current.members[ext] = fh.read() if fh is not None else None
            current.end = info.offset_data + -(-info.size // _BLOCK) * _BLOCK
    except tarfile.TarError as exc:
        raise DataError(label, f"truncated or corrupt tar: {exc}") from None
    if current is not None:
        yield current


def _caption(record: _Record, meta: dict[str, Any], label: str) -> str:
    """The `.txt` caption, else the json's `caption` (img2dataset run without saving captions)."""
    text = record.members.get("txt")
    if text is None:
        return str(meta.get("caption") or "").strip()
    try:
        return text.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DataError(label, f"caption is not UTF-8: {exc}", episode=f"key {record.key}", key="txt") from None


def _json(record: _Record, label: str) -> dict[str, Any]:
    raw = record.members.get("json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise DataError(label, f"invalid json member: {exc}", episode=f"key {record.key}", key="json") from None
    if not isinstance(meta, dict):
        raise DataError(label, "json member is not an object", episode=f"key {record.key}", key="json")
    return meta


def _left_out(record: _Record, meta: dict[str, Any], label: str) -> str | None:
    """Why a record makes no sample, or None. Listing and converting apply the same rule."""
    status = meta.get("status", "success")
    if status != "success":
        return f"status {status}"
    if record.image_ext is None:
        return "no image"
    if not _caption(record, meta, label):
        return "no caption"
    return None


class Img2DatasetRef(VlRef):
    """A unit's `ref`: a byte range of one tar holding whole records, or the damage that ends a tar."""

    tar: str  # name inside the source folder
    start: NotRequired[int]  # [start, end): from the first record's first header to the last one's end
    end: NotRequired[int]
    damaged: NotRequired[str]  # what is wrong with the tar after `key` (a unit that fails when converted)
    key: NotRequired[str | None]  # the last record read before the damage; None: at the tar's start


def list_units(src: Path, opts: Img2DatasetOptions) -> list[Unit[Img2DatasetRef]]:
    """Units of consecutive records of one tar each, by byte range."""
    tars = _tars(src)
    if not tars:
        raise DataError(src, "no *.tar shards found (expected img2dataset's webdataset output folder)")

    def make_ref(records: list[tuple[str, _Record]]) -> tuple[str, Img2DatasetRef]:
        tar, first, last = records[0][0], records[0][1], records[-1][1]
        return f"{tar} keys {first.key}..{last.key}", Img2DatasetRef(tar=tar, start=first.start, end=last.end)

    builder = UnitBuilder(make_ref, per_unit=RECORDS_PER_UNIT)
    for path in tars:
        damage = tar_damage(path)
        records = _readable_records(path, tolerate=damage is not None)
        # tarfile stops quietly where a tar is cut short; the record read last may then lack members,
        # so it goes, with the damage, into a unit of its own that fails (or is skipped and listed).
        suspect = records.pop() if damage and records else None
        for record in records:
            reason = _left_out(record, _json(record, str(path)), str(path))
            if reason:
                builder.drop(reason)
                continue
            builder.add((path.name, record))
            if builder.pending and record.end - builder.pending[0][1].start >= _UNIT_BYTES:
                builder.close()
        builder.close()  # a unit never spans two tars
        if damage:
            where = f"after key {suspect.key}" if suspect else "at its start"
            builder.standalone(f"{path.name} damaged {where}", 1, Img2DatasetRef(
                tar=path.name, damaged=damage, key=suspect.key if suspect else None))
    return builder.finish()


def _readable_records(path: Path, *, tolerate: bool) -> list[_Record]:
    """The records tarfile reads; with `tolerate` (damage already found), those before it fails."""
    records: list[_Record] = []
    try:
        with _open(path) as tar:
            records.extend(_iter_records(tar, str(path), read_images=False))
    except DataError:
        if not tolerate:
            raise
    return records


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        raise DataError(path, f"not a readable tar file: {exc}") from None


def describe(src: Path, opts: Img2DatasetOptions, units: Sequence[Unit[Img2DatasetRef]]) -> DatasetInfo:
    """The vision-language dataset info of img2dataset shards."""
    return vl_info(opts, cameras=["image"], units=units, extra={"source_tars": len(_tars(src))})


def _read_range(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    if len(data) != end - start:
        raise DataError(path, f"tar ends at byte {start + len(data)}, expected data up to byte {end} (truncated?)")
    return data


def convert_unit(src: Path, opts: Img2DatasetOptions, unit: Unit[Img2DatasetRef], sink: UnitSink) -> None:
    """Write the caption samples of one unit's byte range of a shard."""
    path = src / unit.ref["tar"] if src.is_dir() else src
    label = str(path)
    if "damaged" in unit.ref:
        where = f"key {unit.ref['key']}" if unit.ref["key"] else None
        raise DataError(path, unit.ref["damaged"], episode=where)
    # The unit's byte range starts at a member header, so it parses as a tar of its own.
    data = _read_range(path, unit.ref["start"], unit.ref["end"])
    name = dataset_name(src, opts)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for record in _iter_records(tar, label, read_images=True):
            meta = _json(record, label)
            if _left_out(record, meta, label):
                continue
            ext = record.image_ext or ""
            image = store_image(record.members[ext] or b"", opts, file=path, record=f"key {record.key}", key=ext)
            sample_meta = {"dataset": name, "source_id": record.key, "key": record.key,
                           "shard": path.name, "url": meta.get("url")}
            sink.add(caption_sample([image], opts.prompt, _caption(record, meta, label), sample_meta))


CONVERTER = Converter("img2dataset", "img2dataset WebDataset tars (image, caption txt, json).", Img2DatasetOptions,
                      list_units, describe, convert_unit)
