"""Local paths and fsspec URLs behind one small interface: read the manifest, read byte ranges.

Shards are read by byte range (a sample's members are adjacent in its tar), so object storage needs
one ranged GET per sample and never a whole-shard download. Remote ranges are read with
`fs.cat_file(path, start, end)`: one request for exactly those bytes. NOTE: a file object from
`fs.open` would not do: s3fs and gcsfs open files with a read-ahead cache of 50 MiB blocks
(`cache_type="readahead"`), so each small read after a seek fetched up to the end of the shard
(20 samples of a 224 px dataset moved 64-137 MB; benchmarks/storage_bench.py measures both paths).

Object stores need their fsspec back end: `pip install 'cotrain[s3]'` (s3fs) or `'cotrain[gcs]'`
(gcsfs); a missing one is a one-line ConfigError naming the extra. `StorageOptions` is what a
mixture source (or `--storage-option` on the dataset commands) may say about the connection.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest
from cotrain.errors import ConfigError, DataError

__all__ = ["RangeReader", "StorageOptions", "filesystem", "is_url", "join", "list_files", "local_copy",
           "read_manifest"]

# fsspec protocol -> the cotrain extra that installs its back end.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_S3, _GCS = ("s3", "s3a"), ("gs", "gcs")
Scalar = str | int | float | bool


class StorageOptions(BaseModel):
    """How to reach a dataset on object storage; turned into the fsspec file system's arguments.

    Credentials stay out of the YAML: name an AWS `profile`, or let the back end find them (AWS_*
    environment variables, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS, instance metadata).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(None, description="S3-compatible or GCS endpoint (MinIO, R2, a local server).")
    profile: str | None = Field(None, description="AWS profile from ~/.aws (s3:// only).")
    anonymous: bool = Field(False, description="Unsigned requests to a public bucket.")
    region: str | None = Field(None, description="AWS region of the bucket (s3:// only).")
    project: str | None = Field(None, description="Google Cloud project (gs:// only).")
    requester_pays: bool = Field(False, description="Bill the reader for a requester-pays bucket (s3://, gs://).")
    extra: dict[str, Scalar] = Field(default_factory=dict,
                                     description="Further keyword arguments passed as-is to the fsspec file system.")

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        """The file system's keyword arguments for `protocol`; ConfigError for a field it has no use for."""
        only = {"profile": _S3, "region": _S3, "project": _GCS, "requester_pays": _S3 + _GCS,
                "anonymous": _S3 + _GCS, "endpoint_url": _S3 + _GCS}
        for field, protocols in only.items():
            if getattr(self, field) not in (None, False) and protocol not in protocols:
                where = ", ".join(f"{p}://" for p in protocols)
                raise ConfigError(f"storage_options.{field} applies to {where} URLs, not {protocol}://")
        out: dict[str, Any] = {}
        if self.endpoint_url is not None:
            out["endpoint_url"] = self.endpoint_url
        if self.requester_pays:
            out["requester_pays"] = True
        if protocol in _S3:
            out.update({k: v for k, v in (("profile", self.profile), ("anon", self.anonymous or None)) if v})
            if self.region is not None:
                out["client_kwargs"] = {"region_name": self.region}
        elif protocol in _GCS:
            token = "anon" if self.anonymous else None
            out.update({k: v for k, v in (("project", self.project), ("token", token)) if v})
        return {**out, **self.extra}


def _backend_errors() -> tuple[type[BaseException], ...]:
    """Exceptions the object-store clients raise besides OSError (an unreachable endpoint, missing
    credentials), from the client libraries already imported: those that can have raised them."""
    names = {"botocore.exceptions": ("BotoCoreError", "ClientError"), "google.auth.exceptions": ("GoogleAuthError",),
             "aiohttp": ("ClientError",)}
    return tuple(getattr(sys.modules[mod], name) for mod, found in names.items() if mod in sys.modules
                 for name in found if hasattr(sys.modules[mod], name))


def _remote(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` with client errors raised as OSError, so callers handle one kind."""
    try:
        return call(*args, **kwargs)
    except OSError:
        raise
    except _backend_errors() as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def is_url(value: str) -> bool:
    """Whether `value` is a URL rather than a local path."""
    return "://" in value


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if is_url(url) else "file"


def filesystem(url: str, options: StorageOptions | None = None) -> tuple[Any, str]:
    """(fsspec file system, root path inside it) for a dataset URL or local path.

    ConfigError when the protocol's back end is not installed (naming the extra that installs it) or
    when `options` are given for a local path or do not apply to the protocol."""
    import fsspec

    protocol = _protocol(url)
    if options is not None and protocol in ("file", "local"):
        raise ConfigError(f"{url}: storage_options are for object-storage URLs (s3://, gs://), not local paths")
    kwargs = options.fsspec_kwargs(protocol) if options is not None else {}
    if protocol in _S3:  # botocore logs "Found credentials in ..." at INFO on every new client
        for name in ("botocore.credentials", "aiobotocore.credentials"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    try:
        fs, root = fsspec.core.url_to_fs(url, **kwargs)
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        hint = f"pip install 'cotrain[{extra}]'" if extra else str(exc)
        raise ConfigError(f"{url}: reading {protocol}:// needs an fsspec back end that is not installed: "
                          f"{hint}") from None
    except ValueError as exc:  # an unknown protocol, or arguments its file system refuses
        raise ConfigError(f"{url}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{url}: storage_options not accepted by the {protocol}:// file system: {exc}") from None
    return fs, root.rstrip("/")


def join(url: str, name: str) -> str:
    """`name` inside the folder at `url`."""
    return url.rstrip("/") + "/" + name


def read_manifest(url: str | Path, options: StorageOptions | None = None) -> Manifest:
    """The manifest of a dataset at a local path or URL (validated like `load_manifest`)."""
    url = str(url)
    if not is_url(url) and options is None:
        return load_manifest(url)
    fs, root = filesystem(url, options)
    path = join(url, MANIFEST_NAME)
    try:
        data = _remote(fs.cat_file, join(root, MANIFEST_NAME))
    except FileNotFoundError:
        raise DataError(url, f"no {MANIFEST_NAME}: not a converted dataset, or its conversion did not finish") from None
    except OSError as exc:
        raise DataError(path, f"unreadable manifest: {exc}") from None
    return parse_manifest(data, path)


def list_files(url: str | Path, options: StorageOptions | None = None) -> list[str]:
    """Names of the files (not folders) directly in a dataset folder, sorted."""
    fs, root = filesystem(str(url), options)
    try:
        entries = _remote(fs.ls, root, detail=True)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataError(url, f"cannot list the dataset folder: {exc}") from None
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")


@contextmanager
def local_copy(url: str | Path, names: list[str], options: StorageOptions | None = None) -> Iterator[Path]:
    """A local folder holding the named files of the dataset (those that exist): the folder itself
    when local, else a temporary download of just those files (each fetched whole, once)."""
    url = str(url)
    if not is_url(url) and options is None:
        yield Path(url)
        return
    import tempfile

    fs, root = filesystem(url, options)
    with tempfile.TemporaryDirectory(prefix="cotrain-") as tmp:
        for name in names:
            try:
                _remote(fs.get_file, join(root, name), os.path.join(tmp, name))
            except FileNotFoundError:
                pass  # the caller reports it as missing, as it would for a local folder
            except OSError as exc:
                raise DataError(join(url, name), f"download failed: {exc}") from None
        yield Path(tmp)


class RangeReader:
    """Reads byte ranges of files under one dataset URL, keeping a few handles open (per process).

    Local datasets are read with one `os.pread` per range on a cached descriptor (no seek, no file
    object layers): the loader reads one range per sample, so this is on its per-sample path. Remote
    ones with one `cat_file` range request per read (see the module docstring).
    """

    def __init__(self, url: str, options: StorageOptions | None = None, max_open: int = 16) -> None:
        self.url = url
        self._fs, self._root = filesystem(url, options)
        self._max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        self._local = protocol in ("file", "local")

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(join(self._root, name), os.O_RDONLY)
            self._fds[name] = fd
            if len(self._fds) > self._max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(name)
        return fd

    def read(self, name: str, offset: int, size: int) -> bytes:
        try:
            if self._local:
                data = os.pread(self._fd(name), size, offset)
            elif size:
                data = _remote(self._fs.cat_file, join(self._root, name), start=offset, end=offset + size)
            else:
                data = b""
        except FileNotFoundError:
            raise DataError(join(self.url, name), "shard listed in the manifest is missing") from None
        except OSError as exc:
            raise DataError(join(self.url, name), f"unreadable shard: {exc}") from None
        if len(data) != size:
            raise DataError(join(self.url, name),
                            f"truncated shard: wanted {size} bytes at offset {offset}, got {len(data)}")
        return bytes(data)

    def read_all(self, name: str) -> bytes:
        """A whole (small) file; FileNotFoundError when it does not exist."""
        if self._local:
            with open(join(self._root, name), "rb") as fh:
                return fh.read()
        return bytes(_remote(self._fs.cat_file, join(self._root, name)))

    def local_path(self, name: str) -> str | None:
        """A filesystem path when the dataset is local (the index scan then memory-maps the shard)."""
        return join(self._root, name) if self._local else None

    def open(self, name: str) -> Any:
        """A file object for a sequential pass (the header scan of a shard without a sidecar): here
        the back end's read-ahead blocks are what is wanted."""
        return self._fs.open(join(self._root, name), "rb")

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
