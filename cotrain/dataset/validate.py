"""Check a converted dataset against its manifest, byte for byte and sample by sample.

Each shard is read once: the bytes stream through sha256 while a tolerant tar reader groups members
into samples and checks every sample against the manifest's contract (see `check_sample`). Unlike the
training reader, which stops at the first bad member, validation keeps going and collects every
problem it can still see, so one run lists everything that is wrong. Refused members (`.pickle` and
other pickle-capable kinds) are reported and never read. Problems are data, not exceptions: the
library returns a `ValidationReport` and never prints; only an unreadable manifest raises DataError.
A dataset at an object-storage URL is checked the same way, each shard (and its sidecar) downloaded
whole to a temporary folder once, then checked and deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cotrain.dataset import keys
from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry
from cotrain.dataset.shard_index import INDEX_SUFFIX, index_name, sidecar_problem
from cotrain.dataset.shards import npy_problem, split_member
from cotrain.dataset.storage import StorageOptions, list_files, local_copy, read_manifest

__all__ = ["DEFAULT_MAX_PROBLEMS", "Problem", "ValidationReport", "check_sample", "validate"]

DEFAULT_MAX_PROBLEMS = 1000
# Modalities whose samples carry state, an action chunk and its mask (see convert/robot.py).
_ROBOT_LIKE = (keys.ROBOT, keys.HUMAN_VIDEO)
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located by file (shard or manifest) and, inside a shard, by sample key."""

    file: str
    problem: str
    sample: str | None = None

    def __str__(self) -> str:
        where = self.file if self.sample is None else f"{self.file}, sample {self.sample}"
        return f"{where}: {self.problem}"


@dataclass
class ValidationReport:
    """The outcome of `validate`: counts, and the problems in manifest order (file, then sample)."""

    root: str  # the dataset directory or URL
    shards: int = 0  # shard files read (a missing one is a problem, not counted)
    samples: int = 0  # samples read from them
    problems: list[Problem] = field(default_factory=list)  # the first `max_problems` problems
    num_problems: int = 0  # every problem found, including those not kept
    max_problems: int | None = DEFAULT_MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.num_problems == 0

    def add(self, problem: Problem) -> None:
        self.num_problems += 1
        if self.max_problems is None or len(self.problems) < self.max_problems:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "root": self.root, "shards": self.shards, "samples": self.samples,
                "num_problems": self.num_problems, "problems": [asdict(p) for p in self.problems]}



def _decode(ext: str, data: bytes) -> tuple[Any, str | None]:
    """Decode an npy/json/txt member; other kinds stay bytes. Returns (value, problem)."""
    last = ext.rsplit(".", 1)[-1].lower()
    try:
        if last == "npy":
            if not data.startswith(b"\x93NUMPY"):  # else numpy guesses "pickled data", which misleads
                return None, f"{ext} is not an npy array (starts with {data[:6]!r})"
            problem = npy_problem(data)  # numpy's own messages advise `allow_pickle`: say what is wrong instead
            return (None, f"{ext}: {problem}") if problem else (np.load(io.BytesIO(data), allow_pickle=False), None)
        if last == "json":
            return json.loads(data.decode("utf-8")), None
        if last == "txt":
            return data.decode("utf-8"), None
    except (ValueError, OSError, EOFError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        kind = {"npy": "a readable npy array", "json": "valid JSON", "txt": "UTF-8 text"}[last]
        return None, f"{ext} is not {kind}: {exc}"
    return data, None


def _nonfinite(ext: str, array: np.ndarray) -> str | None:
    if not np.issubdtype(array.dtype, np.floating):
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    at = tuple(int(i) for i in np.argwhere(bad)[0])
    kind = "NaN" if np.isnan(array[at]) else "Inf"
    names = ("dimension",) if array.ndim == 1 else ("step", "dimension") if array.ndim == 2 else ()
    where = ", ".join(f"{n} {i}" for n, i in zip(names, at)) if names else f"index {at}"
    return f"{ext}: {kind} at {where} ({int(bad.sum())} of {array.size} values not finite)"


def _check_array(ext: str, value: Any, dtype: str, shape: tuple[int | None, ...]) -> list[str]:
    if not isinstance(value, np.ndarray):
        return []  # undecodable: already reported
    out = []
    if value.dtype != np.dtype(dtype):
        out.append(f"{ext} dtype {value.dtype}, expected {dtype}")
    ok = value.ndim == len(shape) and all(e is None or s == e for s, e in zip(value.shape, shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ("," if len(shape) == 1 else "") + ")"
        out.append(f"{ext} shape {tuple(value.shape)}, expected {want}")
    return out


def _check_lowdim(m: Manifest, values: dict[str, Any]) -> list[str]:
    robot_like = m.modality in _ROBOT_LIKE
    out: list[str] = []
    # (member, dtype, shape with None for "any", required when absent); a horizon of None allows any.
    for ext, dtype, shape, required in (
        (keys.STATE, "float32", (len(m.state_names),), robot_like or bool(m.state_names)),
        (keys.ACTIONS, "float32", (m.horizon, len(m.action_names)), robot_like or bool(m.action_names)),
        (keys.ACTIONS_VALID, "bool", (m.horizon,), keys.ACTIONS in values),
    ):
        if ext in values:
            out += _check_array(ext, values[ext], dtype, shape)
        elif required:
            out.append(f"{ext} missing")
    tokens = values.get(keys.ACTION_TOKENS)
    if m.modality == keys.ACTION_TOKENS_MODALITY and keys.ACTION_TOKENS not in values:
        out.append(f"{keys.ACTION_TOKENS} missing")
    elif isinstance(tokens, np.ndarray) and (tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer)):
        out.append(f"{keys.ACTION_TOKENS} dtype {tokens.dtype} shape {tokens.shape}, expected 1-D integers")
    for ext, value in values.items():
        if isinstance(value, np.ndarray) and (msg := _nonfinite(ext, value)):
            out.append(msg)
    return out


def _check_meta(m: Manifest, values: dict[str, Any]) -> list[str]:
    meta = values.get(keys.META)
    if meta is None:  # absent, or undecodable (already reported)
        return [] if keys.META in values else [f"{keys.META} missing"]
    if not isinstance(meta, dict):
        return [f"{keys.META} is not a JSON object"]
    out = []
    if meta.get("modality") != m.modality:
        out.append(f"{keys.META} modality {meta.get('modality')!r}, manifest says {m.modality!r}")
    if m.embodiment is not None and meta.get("embodiment") != m.embodiment:
        out.append(f"{keys.META} embodiment {meta.get('embodiment')!r}, manifest says {m.embodiment!r}")
    return out


def _check_image(ext: str, data: bytes, bound: list[int] | None) -> str | None:
    from PIL import Image

    if data[:3] != b"\xff\xd8\xff":
        return f"{ext} is not a JPEG (starts with {data[:4]!r})"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: a truncated or corrupt JPEG fails here, not at training time
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{ext} does not decode: {exc}"
    if bound is not None and (height > bound[0] or width > bound[1]):
        return f"{ext} is {height}x{width} (HxW), larger than the manifest's image_size {bound[0]}x{bound[1]}"
    return None


def _required_cameras(m: Manifest, values: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The cameras this sample must hold. Image-text records with image lists store `image_0..n-1`
    and say n in meta `num_images`, while the manifest lists the longest list's names."""
    meta = values.get(keys.META)
    count = meta.get("num_images") if isinstance(meta, dict) else None
    if m.modality != keys.VISION_LANGUAGE or not isinstance(count, int) or isinstance(count, bool):
        return list(m.cameras), []
    if not 1 <= count <= len(m.cameras):
        return list(m.cameras), [f"{keys.META} num_images {count}, the manifest lists {len(m.cameras)} cameras"]
    return list(m.cameras[:count]), []


def _check_images(m: Manifest, values: dict[str, Any]) -> list[str]:
    required, out = _required_cameras(m, values)
    out += [f"{keys.camera_member(cam)} missing (camera {cam!r} of the manifest)"
            for cam in required if keys.camera_member(cam) not in values]
    for ext, value in values.items():
        if ext.lower().endswith(keys.IMAGE_EXT) and (msg := _check_image(ext, value, m.image_size)):
            out.append(msg)
    return out


def _check_text(m: Manifest, values: dict[str, Any]) -> list[str]:
    if m.modality != keys.VISION_LANGUAGE:
        return []
    has_pair = keys.PROMPT in values and keys.TARGET in values
    if not has_pair and keys.CONVERSATION not in values:
        return [f"vision-language sample needs {keys.PROMPT} and {keys.TARGET}, or {keys.CONVERSATION}"]
    target, conv = values.get(keys.TARGET), values.get(keys.CONVERSATION)
    out = [f"{keys.TARGET} is empty"] if has_pair and isinstance(target, str) and not target.strip() else []
    if conv is not None and (not isinstance(conv, list) or not conv or not all(isinstance(t, dict) for t in conv)):
        out.append(f"{keys.CONVERSATION} must be a non-empty list of turn objects")
    return out


def check_sample(manifest: Manifest, members: dict[str, bytes]) -> list[str]:
    """Every problem of one sample (member extension -> bytes) against the manifest's contract."""
    values: dict[str, Any] = {}
    out: list[str] = []
    for ext in sorted(members):
        values[ext], problem = _decode(ext, members[ext])
        if problem:
            out.append(problem)
    for check in (_check_meta, _check_lowdim, _check_images, _check_text):
        out += check(manifest, values)
    return out



class _HashingReader:
    """Passes reads through while hashing them, so a shard is read from disk exactly once."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Hash whatever the tar reader did not consume (end-of-archive padding, or all after an error)."""
        while self.read(_READ_SIZE):
            pass


@dataclass
class _ShardResult:
    name: str
    read: bool = False
    samples: int = 0
    keys: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tar_end: int | None = None  # set when the tar reader stopped at a zero block, not at an error


def _member(info: tarfile.TarInfo, tar: tarfile.TarFile, res: _ShardResult) -> tuple[str, str, bytes] | None:
    key, ext = split_member(info.name)
    problem = (f"member {info.name!r} is not a regular file" if not info.isfile()
               else f"member {info.name!r} has no extension" if not ext or "/" in ext
               else f"forbidden member {ext!r} (pickle-capable formats are refused)"
               if ext.rsplit(".", 1)[-1].lower() in keys.FORBIDDEN_EXTS else None)
    if problem is not None:  # refused members are never read
        res.problems.append(Problem(res.name, problem, key))
        return None
    fh = tar.extractfile(info)
    return key, ext, fh.read() if fh else b""


def _iter_tar_samples(fileobj: _HashingReader, res: _ShardResult) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members by key; record member-level problems instead of stopping."""
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|", bufsize=_READ_SIZE) as tar:  # type: ignore[call-overload]  # duck-typed reader: stream mode only calls read()
            for info in tar:
                item = _member(info, tar, res)
                if item is None:
                    continue
                if item[0] != key:
                    if key is not None:
                        yield key, members
                    key, members = item[0], {}
                if item[1] in members:
                    res.problems.append(Problem(res.name, f"member {item[1]!r} appears twice", key))
                members[item[1]] = item[2]
            res.tar_end = tar.offset  # where the end-of-archive marker should start
    except (tarfile.TarError, OSError, EOFError) as exc:
        # The sample being read is incomplete: report where the tar broke instead of its missing members.
        res.problems.append(Problem(res.name, f"truncated or corrupt tar: {exc}", key))
        return
    if key is not None:
        yield key, members


def _first_nonzero(fh: BinaryIO, start: int) -> int | None:
    """First non-zero byte from `start` on (a valid tar has only zero padding there): Python's stream
    reader ends quietly at a corrupt header past the first, and this tells that from a real end."""
    fh.seek(start)
    while chunk := fh.read(_READ_SIZE):
        if stripped := chunk.lstrip(b"\0"):
            return fh.tell() - len(stripped)
    return None


def _check_shard(root: str, options: StorageOptions | None, entry: ShardEntry, manifest: Manifest) -> _ShardResult:
    with local_copy(root, [entry.name, index_name(entry.name)], options) as folder:
        return _check_local_shard(folder, entry, manifest)


def _check_local_shard(root: Path, entry: ShardEntry, manifest: Manifest) -> _ShardResult:
    res = _ShardResult(entry.name)
    path = root / entry.name
    if not path.is_file():
        res.problems.append(Problem(entry.name, f"missing (the manifest lists it with {entry.samples} samples)"))
        return res
    res.read = True
    seen: set[str] = set()
    with open(path, "rb") as fh:
        reader = _HashingReader(fh)
        for key, members in _iter_tar_samples(reader, res):
            res.samples += 1
            if not keys.is_valid_key(key):
                res.problems.append(Problem(entry.name, "invalid sample key: use letters, digits, '_' or '-'", key))
            if key in seen:
                res.problems.append(Problem(entry.name, "duplicate key (its members are not adjacent?)", key))
            seen.add(key)
            res.keys.append(key)
            res.problems += [Problem(entry.name, p, key) for p in check_sample(manifest, members)]
        reader.drain()
        end = res.tar_end
        if end is not None and (at := _first_nonzero(fh, end)) is not None:
            what = (f"unreadable member header at byte {end}; the last {reader.size - end} bytes were not read"
                    if at == end else f"non-zero byte at {at}, after the tar's end-of-archive marker at byte {end}")
            res.problems.append(Problem(entry.name, what))
    if reader.size != entry.bytes:
        res.problems.append(Problem(entry.name, f"size {reader.size} bytes, manifest says {entry.bytes}"))
    if (digest := reader.sha.hexdigest()) != entry.sha256:
        res.problems.append(Problem(entry.name, f"sha256 {digest}, manifest says {entry.sha256}"))
    if res.samples != entry.samples:
        res.problems.append(Problem(entry.name, f"{res.samples} samples, manifest says {entry.samples}"))
    if not res.problems and (problem := sidecar_problem(root / entry.name, entry.bytes, entry.samples)):
        res.problems.append(Problem(index_name(entry.name), problem))  # only an intact shard's is checked
    return res


def _manifest_problems(files: list[str], m: Manifest) -> tuple[list[Problem], list[ShardEntry]]:
    """Count consistency, shard names, and tar files in the folder that the manifest does not list."""
    out: list[Problem] = []
    if (listed := sum(s.samples for s in m.shards)) != m.num_samples:
        out.append(Problem(MANIFEST_NAME, f"num_samples {m.num_samples}, but its shards hold {listed}"))
    if (listed := sum(s.episodes for s in m.shards)) != m.num_episodes:
        out.append(Problem(MANIFEST_NAME, f"num_episodes {m.num_episodes}, but its shards hold {listed}"))
    entries, names = [], set()
    for s in m.shards:
        if "/" in s.name or "\\" in s.name or s.name in ("", ".", ".."):
            out.append(Problem(MANIFEST_NAME, f"shard name {s.name!r} is not a plain file name; not read"))
        elif s.name in names:
            out.append(Problem(MANIFEST_NAME, f"shard {s.name!r} is listed twice"))
        else:
            names.add(s.name)
            entries.append(s)
    indices = {index_name(n) for n in names}
    for name in files:
        if ".tar" in name and name not in names | indices:
            what = ("unexpected shard index: its shard is not listed in the manifest" if name.endswith(INDEX_SUFFIX)
                    else "unexpected tar file: not listed in the manifest")
            out.append(Problem(name, what))
    return out, entries


def _shard_results(root: str, options: StorageOptions | None, entries: list[ShardEntry], m: Manifest,
                   workers: int) -> Iterator[_ShardResult]:
    if workers <= 1 or len(entries) <= 1:
        for entry in entries:
            yield _check_shard(root, options, entry, m)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned like the conversion pool; `map` keeps manifest order, so reports do not depend on timing.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(entries)), mp_context=ctx) as pool:
        n = len(entries)
        yield from pool.map(_check_shard, [root] * n, [options] * n, entries, [m] * n)


def validate(root: str | Path, *, workers: int = 1, max_problems: int | None = DEFAULT_MAX_PROBLEMS,
             progress: bool | None = False, storage_options: StorageOptions | None = None) -> ValidationReport:
    """Check every shard of the dataset at `root` against its manifest; see the module docstring.

    Args:
        root: the dataset directory or URL (its manifest must load, else DataError).
        workers: processes checking shards in parallel.
        max_problems: keep at most this many problems in the report (None: all); all are counted.
        progress: progress bar (None: when stderr is a terminal).
        storage_options: how to reach `root` on object storage.
    """
    from cotrain.progress import Progress

    root = str(root)
    manifest = read_manifest(root, storage_options)
    report = ValidationReport(root, max_problems=max_problems)
    found, entries = _manifest_problems(list_files(root, storage_options), manifest)
    for p in found:
        report.add(p)
    owner: dict[str, str] = {}
    with Progress(total=manifest.num_samples, label="validate", enabled=progress) as bar:
        for res in _shard_results(root, storage_options, entries, manifest, workers):
            report.shards += int(res.read)
            report.samples += res.samples
            for p in res.problems:
                report.add(p)
            for key in res.keys:
                if owner.setdefault(key, res.name) != res.name:
                    report.add(Problem(res.name, f"duplicate key (also in {owner[key]})", key))
            bar.advance(res.samples)
    return report
