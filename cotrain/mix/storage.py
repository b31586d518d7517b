"""Local paths and fsspec URLs behind one small interface: read the manifest, read byte ranges.

Shards are read by byte range (a sample's members are adjacent in its tar), so object storage needs
one ranged GET per sample and never a whole-shard download.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from cotrain.errors import DataError
from cotrain.manifest import MANIFEST_NAME, Manifest


def is_url(value: str) -> bool:
    return "://" in value


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def read_manifest(url: str) -> Manifest:
    """The manifest of a dataset at a local path or URL (validated like `load_manifest`)."""
    from pydantic import ValidationError

    fs, root = _fs(url)
    path = join(root, MANIFEST_NAME)
    try:
        with fs.open(path, "rb") as fh:
            raw = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(url, f"no {MANIFEST_NAME}: not a converted dataset (or its conversion did not finish)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable manifest: {exc}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(path, f"field {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None


class RangeReader:
    """Reads byte ranges of files under one dataset URL, keeping a few handles open (per process).

    Local datasets are read with one `os.pread` per range on a cached descriptor (no seek, no file
    object layers): the loader reads one range per sample, so this is on its per-sample path.
    """

    def __init__(self, url: str, max_open: int = 16) -> None:
        self.url = url
        self._fs, self._root = _fs(url)
        self._open = lru_cache(maxsize=max_open)(self._open_file)
        self._max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        self._local = protocol in ("file", "local")

    def _open_file(self, name: str) -> Any:
        return self._fs.open(join(self._root, name), "rb")

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
        if self._local:
            data = os.pread(self._fd(name), size, offset)
        else:
            fh = self._open(name)
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise DataError(join(self.url, name), f"truncated shard: wanted {size} bytes at offset {offset}, got {len(data)}")
        return data

    def read_all(self, name: str) -> bytes:
        """A whole (small) file; FileNotFoundError when it does not exist."""
        if self._local:
            with open(join(self._root, name), "rb") as fh:
                return fh.read()
        return bytes(self._fs.cat_file(join(self._root, name)))

    def local_path(self, name: str) -> str | None:
        """A filesystem path when the dataset is local (the index scan then memory-maps the shard)."""
        return join(self._root, name) if self._local else None

    def open(self, name: str) -> Any:
        return self._fs.open(join(self._root, name), "rb")

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
