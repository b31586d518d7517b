"""Hugging Face image-text parquet files -> captioning, question-answering or conversation samples.

Layout (huggingface/datasets `features/image.py`): an Image column is stored as a struct
`{bytes: binary, path: string}` (bytes may be null when the image is a file beside the parquet), a
list of such structs for several images per row; the schema metadata key `huggingface` holds
`info.features` where image columns have `_type: Image` (or a `List`/`Sequence` of it). Text is a
string column (or a list of strings, e.g. five captions per image); VQA sets often carry a
`conversations` column of `[{from, value}]` (LLaVA) or `[{role, content}]` turns instead.

Columns are found from the features metadata and usual names unless given with `--image-column`,
`--text-column`, `--prompt-column` or `--conversations-column`. SRC is one parquet file or a folder
of them (read in name order, not recursively, so one split at a time). Units are runs of whole row
groups (at least 256 rows), read in batches of 64 rows, so at most one row group's images are in
memory at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink, VisionLanguageOptions
from cotrain.errors import ConfigError, DataError, suggest
from cotrain_converters.source_files import inside
from cotrain_converters.vision_language.common import (
    RECORDS_PER_UNIT,
    CaptionsMode,
    StoredImage,
    VlRef,
    camera_names,
    caption_sample,
    captions_field,
    clean_text,
    conversation_sample,
    dataset_name,
    normalise_conversation,
    store_image,
    vl_info,
)

_TEXT_NAMES = ("caption", "text", "captions", "sentence", "sentences", "description", "alt_text")
_CONVERSATION_NAMES = ("conversations", "conversation", "messages")
_BATCH_ROWS = 64


class HFParquetOptions(VisionLanguageOptions):
    """Options of the Hugging Face parquet converter."""

    image_column: str | None = Field(None, description="Image column (default: the Image feature).")
    text_column: str | None = Field(
        None, description="Target text column, string or list of strings "
                          f"(default: first of {', '.join(_TEXT_NAMES)}).")
    prompt_column: str | None = Field(None, description="Prompt text column, e.g. question (default: --prompt).")
    conversations_column: str | None = Field(
        None, description="Conversation column of [{from, value}] or [{role, content}] turns "
                          f"(default: {', '.join(_CONVERSATION_NAMES)} when present and no --text-column).")
    captions: CaptionsMode = captions_field()


@dataclass(frozen=True)
class _Columns:
    """The columns a conversion reads; stored in every unit's ref so all files are read alike."""

    image: str
    image_list: bool
    text: str | None = None
    text_list: bool = False
    prompt: str | None = None
    conversations: str | None = None
    id: str | None = None

    def names(self) -> list[str]:
        return [c for c in (self.image, self.text, self.prompt, self.conversations, self.id) if c]


def _files(src: Path) -> list[Path]:
    files = [src] if src.is_file() else sorted(src.glob("*.parquet"))
    if not files:
        raise DataError(src, "no *.parquet files found (point SRC at one split's folder or file)")
    return files


def _parquet(path: Path):  # noqa: ANN202  (pyarrow.parquet.ParquetFile)
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable parquet file: {exc}") from None


def _features(schema: Any) -> dict[str, Any]:
    """`info.features` of the `huggingface` schema metadata ({} when absent or unreadable)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def _list_inner(feature: Any) -> Any:
    if isinstance(feature, list) and len(feature) == 1:
        return feature[0]
    if isinstance(feature, dict) and feature.get("_type") in ("List", "LargeList", "Sequence"):
        return feature.get("feature")
    return None


def _is_image_struct(dtype: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(dtype) and {dtype.field(i).name for i in range(dtype.num_fields)} == {"bytes", "path"}


def _list_value(dtype: Any) -> Any:
    import pyarrow as pa

    return dtype.value_type if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) else None


def _image_kind(schema: Any, name: str) -> str | None:
    """'single', 'list' or None, from the features metadata, else from the arrow type."""
    feature = _features(schema).get(name)
    if feature is not None:
        if isinstance(feature, dict) and feature.get("_type") == "Image":
            return "single"
        inner = _list_inner(feature)
        return "list" if isinstance(inner, dict) and inner.get("_type") == "Image" else None
    dtype = schema.field(name).type
    if _is_image_struct(dtype):
        return "single"
    inner = _list_value(dtype)
    return "list" if inner is not None and _is_image_struct(inner) else None


def _text_kind(schema: Any, name: str) -> str | None:
    import pyarrow as pa

    dtype = schema.field(name).type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "single"
    inner = _list_value(dtype)
    return "list" if inner is not None and (pa.types.is_string(inner) or pa.types.is_large_string(inner)) else None


def _is_conversation(schema: Any, name: str) -> bool:
    import pyarrow as pa

    inner = _list_value(schema.field(name).type)
    if inner is None or not pa.types.is_struct(inner):
        return False
    fields = {inner.field(i).name for i in range(inner.num_fields)}
    return bool(fields & {"from", "role"}) and bool(fields & {"value", "content"})


def _require(schema: Any, name: str, path: Path, option: str) -> None:
    if name not in schema.names:
        raise DataError(path, f"{option}: no column {name!r}{suggest(name, schema.names)}; "
                              f"columns: {', '.join(schema.names)}", key=name)


def _pick_image(schema: Any, path: Path, opts: HFParquetOptions) -> tuple[str, bool]:
    if opts.image_column:
        _require(schema, opts.image_column, path, "--image-column")
        kind = _image_kind(schema, opts.image_column)
        if kind is None:
            raise DataError(path, f"--image-column: column {opts.image_column!r} is "
                                  f"{schema.field(opts.image_column).type}, not an image or list of images",
                            key=opts.image_column)
        return opts.image_column, kind == "list"
    found = [n for n in schema.names if _image_kind(schema, n)]
    preferred = [n for n in ("image", "images") if n in found]
    if len(found) == 1 or preferred:
        name = (preferred or found)[0]
        return name, _image_kind(schema, name) == "list"
    problem = f"several image columns ({', '.join(found)})" if found else "no image column (Image feature or " \
                                                                          "struct<bytes, path>)"
    raise DataError(path, f"{problem}; choose one with --image-column; columns: {', '.join(schema.names)}")


def _pick_conversations(schema: Any, path: Path, opts: HFParquetOptions) -> str | None:
    if opts.conversations_column:
        if opts.text_column or opts.prompt_column:
            raise ConfigError("--conversations-column excludes --text-column and --prompt-column: "
                              "a sample is either a conversation or a prompt/target pair")
        _require(schema, opts.conversations_column, path, "--conversations-column")
        if not _is_conversation(schema, opts.conversations_column):
            raise DataError(path, f"--conversations-column: column {opts.conversations_column!r} is "
                                  f"{schema.field(opts.conversations_column).type}, not a list of "
                                  "{from|role, value|content} turns", key=opts.conversations_column)
        return opts.conversations_column
    if opts.text_column or opts.prompt_column:
        return None
    return next((n for n in _CONVERSATION_NAMES if n in schema.names and _is_conversation(schema, n)), None)


def _pick_text(schema: Any, path: Path, opts: HFParquetOptions, option: str, name: str | None) -> tuple[str, bool]:
    if name:
        _require(schema, name, path, option)
        kind = _text_kind(schema, name)
        if kind is None or (option == "--prompt-column" and kind == "list"):
            raise DataError(path, f"{option}: column {name!r} is {schema.field(name).type}, not text", key=name)
        return name, kind == "list"
    for candidate in _TEXT_NAMES:
        if candidate in schema.names and _text_kind(schema, candidate):
            return candidate, _text_kind(schema, candidate) == "list"
    raise DataError(path, f"no text column found (tried {', '.join(_TEXT_NAMES)}); choose one with --text-column "
                          f"or --conversations-column; columns: {', '.join(schema.names)}")


def _is_scalar_id(dtype: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_integer(dtype)


def _detect(schema: Any, path: Path, opts: HFParquetOptions) -> _Columns:
    image, image_list = _pick_image(schema, path, opts)
    row_id = "id" if "id" in schema.names and _is_scalar_id(schema.field("id").type) else None
    conversations = _pick_conversations(schema, path, opts)
    if conversations:
        return _Columns(image, image_list, conversations=conversations, id=row_id)
    text, text_list = _pick_text(schema, path, opts, "--text-column", opts.text_column)
    prompt = _pick_text(schema, path, opts, "--prompt-column", opts.prompt_column)[0] if opts.prompt_column else None
    return _Columns(image, image_list, text=text, text_list=text_list, prompt=prompt, id=row_id)


def _columns(src: Path, opts: HFParquetOptions) -> _Columns:
    """Columns detected on the first file, then checked to read the same way in every file."""
    files = _files(src)
    cols = _detect(_parquet(files[0]).schema_arrow, files[0], opts)
    fixed = opts.model_copy(update={"image_column": cols.image, "text_column": cols.text,
                                    "prompt_column": cols.prompt, "conversations_column": cols.conversations})
    for path in files[1:]:
        other = _detect(_parquet(path).schema_arrow, path, fixed)
        if other != cols:
            raise DataError(path, f"columns differ from {files[0].name}: {asdict(other)} vs {asdict(cols)}")
    return cols


class HfParquetRef(VlRef):
    """A unit's `ref`: consecutive row groups of one parquet file, and the columns every file is read by."""

    file: str  # name inside the source folder
    row_groups: list[int]
    first_row: int  # the file's row index of the unit's first row
    columns: dict[str, str | bool | None]  # `asdict(_Columns)`


def _unit_columns(ref: HfParquetRef) -> _Columns:
    return _Columns(**ref["columns"])  # type: ignore[arg-type]  # the ref holds asdict() of a _Columns


def list_units(src: Path, opts: HFParquetOptions) -> list[Unit[HfParquetRef]]:
    """Units of whole row groups (about RECORDS_PER_UNIT rows each), with the detected columns."""
    cols = asdict(_columns(src, opts))
    units: list[Unit[HfParquetRef]] = []
    for path in _files(src):
        meta = _parquet(path).metadata
        groups: list[int] = []
        first = rows = 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            rows += meta.row_group(g).num_rows
            if rows - first >= RECORDS_PER_UNIT or g == meta.num_row_groups - 1:
                if rows > first:
                    ref = HfParquetRef(file=path.name, row_groups=groups, first_row=first, columns=cols)
                    units.append(Unit(len(units), f"{path.name} rows {first}..{rows - 1}", rows - first, ref))
                groups, first = [], rows
    return units


def _max_images(path: Path, column: str) -> int:
    """Longest image list in a file, read from the list's `path` leaf only (never the image bytes)."""
    import pyarrow.compute as pc

    pf = _parquet(path)
    leaves = [pf.schema.column(i).path for i in range(len(pf.schema))]
    leaf = next((p for p in leaves if p.startswith(column + ".") and p.endswith(".path")), column)
    lengths = pc.list_value_length(pf.read(columns=[leaf]).column(column))
    return int(pc.max(lengths).as_py() or 0)


def describe(src: Path, opts: HFParquetOptions, units: Sequence[Unit[HfParquetRef]]) -> DatasetInfo:
    """The vision-language dataset info, with the columns that were used."""
    cols = _unit_columns(units[0].ref)
    count = max(_max_images(p, cols.image) for p in _files(src)) if cols.image_list else 1
    used = {k: v for k, v in asdict(cols).items() if v and not k.endswith("_list")}
    return vl_info(opts, cameras=camera_names(count, indexed=cols.image_list), units=units,
                   extra={"columns": used, "source_files": len(_files(src))})


def _image_bytes(value: Any, path: Path, record: str, key: str) -> bytes:
    """Embedded bytes, else the file named by `path`, relative to the parquet file's folder (the source
    root: SRC or the folder of the one file given) and never outside it."""
    if not isinstance(value, dict):
        raise DataError(path, "image is null", episode=record, key=key)
    if value.get("bytes") is not None:
        return value["bytes"]
    ref = value.get("path")
    target = inside(path.parent, str(ref), where=path, episode=record, key=key, what="image path") if ref else None
    if target is None or not target.is_file():
        raise DataError(path, f"image has no embedded bytes and its path {ref!r} is not a file",
                        episode=record, key=key)
    return target.read_bytes()


def _images(value: Any, cols: _Columns, path: Path, record: str, opts: HFParquetOptions) -> list[StoredImage]:
    values = value if cols.image_list else [value]
    if not isinstance(values, list) or not values:
        raise DataError(path, "row has no image", episode=record, key=cols.image)
    return [store_image(_image_bytes(v, path, record, cols.image), opts, file=path, record=record, key=cols.image)
            for v in values]


def _texts(row: dict[str, Any], cols: _Columns, path: Path, record: str, opts: HFParquetOptions) -> list[str]:
    value = row[cols.text]  # type: ignore[index]  # _columns sets text whenever conversations is unset
    values = value if cols.text_list else [value]
    if not isinstance(values, list) or not values:
        raise DataError(path, "row has no text", episode=record, key=cols.text)
    values = values if opts.captions == "all" else values[:1]
    return [clean_text(v, file=path, record=record, key=cols.text or "") for v in values]


def _add_row(row: dict[str, Any], index: int, path: Path, cols: _Columns, opts: HFParquetOptions,
             base: dict[str, Any], sink: UnitSink) -> None:
    record = f"row {index}"
    images = _images(row[cols.image], cols, path, record, opts)
    meta = {**base, "source_id": str(row[cols.id]) if cols.id else f"{path.name}:{index}", "row": index}
    if cols.conversations:
        turns = normalise_conversation(row[cols.conversations], file=path, record=record, key=cols.conversations)
        sink.add(conversation_sample(images, turns, meta, indexed=cols.image_list))
        return
    prompt = clean_text(row[cols.prompt], file=path, record=record, key=cols.prompt) if cols.prompt else opts.prompt
    for target in _texts(row, cols, path, record, opts):
        sink.add(caption_sample(images, prompt, target, meta, indexed=cols.image_list))


def convert_unit(src: Path, opts: HFParquetOptions, unit: Unit[HfParquetRef], sink: UnitSink) -> None:
    """Write the samples of one unit's rows."""
    path = src / unit.ref["file"] if src.is_dir() else src
    cols = _unit_columns(unit.ref)
    base = {"dataset": dataset_name(src, opts), "file": path.name}
    index = unit.ref["first_row"]
    batches = _parquet(path).iter_batches(batch_size=_BATCH_ROWS, row_groups=unit.ref["row_groups"],
                                          columns=cols.names(), use_threads=False)
    for batch in batches:
        for row in batch.to_pylist():
            _add_row(row, index, path, cols, opts, base, sink)
            index += 1


CONVERTER = Converter("hf-parquet", "Hugging Face image-text parquet (Image column + text or conversations).",
                      HFParquetOptions, list_units, describe, convert_unit)
