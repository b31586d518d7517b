"""Random access to the samples of one converted dataset, by global sample index.

Sample i lies in the shard whose cumulative count covers i (counts from the manifest). Each shard's
member index gives the byte span of the sample; its members are adjacent, so one ranged read
fetches the whole sample. The index comes from the shard's sidecar (cotrain/dataset/shard_index.py) when it
matches the manifest, else from a tar header scan; either way once per shard and process, kept in
an LRU.

The sampler draws a source's samples in one permutation over all its shards, so consecutive reads
hit shards at random: the LRU must hold every shard of a typical source, or nearly every read
re-scans a whole shard. Indices are therefore compact (flat numpy spans: ~200 bytes per sample of 6
members, mostly the key, against ~1.4 KB as dicts), and the default keeps 1,024 shards: a source of
up to a million samples at the converters' 1,000 per shard, ~200 MB per process when all are held.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Collection, Sequence
from itertools import accumulate
from typing import Any

import numpy as np

from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, reading_problem
from cotrain.dataset.shard_index import ShardIndex, index_name, parse_index
from cotrain.dataset.shards import decode_sample, index_shard
from cotrain.dataset.storage import RangeReader, StorageOptions, join
from cotrain.errors import DataError

log = logging.getLogger(__name__)
BLOCK = 512
DecodedSample = dict[str, Any]
"""What `SourceReader.read` hands the loader: member name (e.g. "state.npy", "front.jpg") -> its value
(npy members as arrays, JSON decoded, text as str, images still JPEG bytes), plus "__key__" (the
sample key) and "__shard__" (the shard's name). Keyed by member name because a dataset's members are
its manifest's (cameras, optional text), not a fixed set of fields."""


def _check_headers(block: bytes, base: int, key: str, spans: list[tuple[str, int, int]], where: str) -> None:
    """Each member's data must follow a tar header of its own name and size. An index that does not
    describe its shard (a stale sidecar of the same size and count) would otherwise hand out another
    sample's bytes as this one's; this costs one 512-byte block per sample and no extra read."""
    for ext, offset, size in spans:
        at = offset - BLOCK - base
        name = f"{key}.{ext}".encode()
        # The header as cotrain's writer makes it (a bare name, an 11-digit octal size): compared in
        # place; other producers' headers (directories, other size fields) take the parse below.
        if at >= 0 and block.startswith(name, at) and block[at + len(name)] == 0 \
                and block.startswith(b"%011o\0" % size, at + 124):
            continue
        header = block[at: at + BLOCK] if at >= 0 else b""
        name_field = header[:100].split(b"\0", 1)[0]
        found = name_field.decode("utf-8", "replace").rsplit("/", 1)[-1]
        try:
            recorded = (
                int(header[124:136].split(b"\0", 1)[0].strip() or b"-1", 8) if header[124:125] < b"\x80" else size
            )
        except ValueError:
            recorded = -1
        # A name field of 99-100 bytes may be cut short: long names live in a GNU `L` or pax record
        # before the header, so only the size can be compared there.
        named = found == f"{key}.{ext}" or len(name_field) >= 99
        if len(header) != BLOCK or recorded != size or not named:
            raise DataError(where, f"sample {key}: the shard index places {ext!r} at byte {offset}, where the tar "
                                   f"holds {found or 'no member header'!r} of {recorded} bytes; the index is stale "
                                   f"(delete the shard's .idx.json sidecar) or the shard is damaged", key=ext)


class SourceReader:
    """Reads raw samples of one dataset.

    Args:
        url: dataset directory or URL.
        manifest: its manifest (shard names and counts).
        storage_options: how to reach `url` on object storage (None: the back end's defaults).
        max_indexed_shards: shard indices kept in memory per process.
    """

    def __init__(self, url: str, manifest: Manifest, storage_options: StorageOptions | None = None,
                 max_indexed_shards: int = 1024) -> None:
        if (problem := reading_problem(manifest)) is not None:  # e.g. a shard named ../x.tar
            raise DataError(join(url, MANIFEST_NAME), problem)
        self.url = url
        self.manifest = manifest
        self._bounds = list(accumulate(s.samples for s in manifest.shards))
        self._files = RangeReader(url, storage_options)
        self._indices: OrderedDict[str, ShardIndex] = OrderedDict()
        self._max = max_indexed_shards
        self._entries = {s.name: s for s in manifest.shards}

    def __len__(self) -> int:
        return self._bounds[-1] if self._bounds else 0

    def locate(self, index: int) -> tuple[str, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {self.url} ({len(self)} samples)")
        s = bisect_right(self._bounds, index)
        start = self._bounds[s - 1] if s else 0
        return self.manifest.shards[s].name, index - start

    def _index(self, shard: str) -> ShardIndex:
        if shard in self._indices:
            self._indices.move_to_end(shard)
            return self._indices[shard]
        index = self._sidecar(shard)
        if index is None:  # (not `or`: an index of an empty shard has length 0)
            index = self._scan(shard)
        self._indices[shard] = index
        if len(self._indices) > self._max:
            self._indices.popitem(last=False)
        return index

    def _sidecar(self, shard: str) -> ShardIndex | None:
        entry = self._entries.get(shard)
        if entry is None:
            return None
        where = join(self.url, index_name(shard))
        try:
            data = self._files.read_all(index_name(shard))
        except FileNotFoundError:
            return None  # datasets converted before sidecars existed, or written by other tools
        except OSError as exc:
            log.warning("%s: unreadable (%s); scanning the shard instead", where, exc)
            return None
        try:
            return parse_index(data, where, entry.bytes, entry.samples)
        except DataError as exc:
            log.warning("%s; scanning the shard instead", exc)
            return None

    def _scan(self, shard: str) -> ShardIndex:
        local = self._files.local_path(shard)
        try:
            if local is not None:
                rows = index_shard(local)
            else:
                with self._files.open(shard) as fh:
                    rows = index_shard(fh, join(self.url, shard))
        except FileNotFoundError:
            raise DataError(join(self.url, shard), "shard listed in the manifest is missing") from None
        except (OSError, EOFError) as exc:
            raise DataError(join(self.url, shard), f"unreadable shard: {exc}") from None
        listed = self._entries[shard].samples if shard in self._entries else len(rows)
        if len(rows) != listed:  # the manifest's counts place every sample: one that is off misplaces them all
            raise DataError(join(self.url, shard), f"holds {len(rows)} samples, the manifest lists {listed}; "
                                                   f"run `cotrain validate {self.url}`")
        return ShardIndex.from_rows(rows)

    def describe(self, index: int) -> str:
        """'shard-000000.tar, sample KEY' for sample `index` (as much of it as can be found), for errors."""
        try:
            shard, local = self.locate(index)
        except IndexError:
            return f"sample {index}"
        held = self._indices.get(shard)
        key = held.keys[local] if held is not None and local < len(held) else f"#{local}"
        return f"{shard}, sample {key}"

    def member_sizes(self, members: Sequence[str]) -> np.ndarray | None:
        """Bytes of each of `members` per sample [N, len(members)] (-1: absent), from the shard indices
        alone, without reading a sample: what sizing the text budget needs. None for a remote dataset
        whose shards lack sidecars (its sizes would cost a read of every shard)."""
        out = []
        for entry in self.manifest.shards:
            local = self._files.local_path(entry.name) is not None
            index = self._index(entry.name) if local else self._sidecar(entry.name)
            if index is None:
                return None
            sizes = np.full((len(index), len(members)), -1, np.int64)
            for layout_no, layout in enumerate(index.layouts):
                rows = np.flatnonzero(index.layout_of == layout_no)
                for j, name in enumerate(members):
                    if name in layout:
                        sizes[rows, j] = index.sizes[index.first[rows] + layout.index(name)]
            out.append(sizes)
        return np.concatenate(out) if out else np.zeros((0, len(members)), np.int64)

    def read_raw(self, index: int) -> dict[str, Any]:
        shard, local = self.locate(index)
        entries = self._index(shard)
        if local >= len(entries):
            raise DataError(join(self.url, shard), f"holds {len(entries)} samples, manifest says more (sample {local})")
        key, spans, start, end = entries.members(local)
        # From one block before the first member: the tar header in front of every member comes along
        # (members are adjacent), and `_check_headers` compares each with the index's name and size.
        base = max(0, start - BLOCK)
        block = self._files.read(shard, base, end - base)
        if len(block) != end - base:
            raise DataError(join(self.url, shard), f"sample {key}: the shard ends {end - base - len(block)} bytes "
                                                   f"before its members do (truncated shard?)")
        _check_headers(block, base, key, spans, join(self.url, shard))
        raw: dict[str, Any] = {"__key__": key, "__shard__": shard}
        for ext, offset, size in spans:
            raw[ext] = block[offset - base: offset - base + size]
        return raw

    def read(self, index: int, members: Collection[str] | None = None) -> DecodedSample:
        """Decoded sample: npy/json/txt members decoded, images still JPEG bytes. With `members`, only
        those are kept (and decoded): the loader skips what its transform never reads (e.g. meta.json)."""
        raw = self.read_raw(index)
        if members is not None:
            raw = {k: v for k, v in raw.items() if k in members or k.startswith("__")}
        try:
            return decode_sample(raw)
        except (ValueError, EOFError, OSError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self._undecodable(raw) from None

    def _undecodable(self, raw: dict[str, Any]) -> DataError:
        """The error naming the member that does not decode (found again member by member)."""
        for ext, data in raw.items():
            if ext.startswith("__"):
                continue
            try:
                decode_sample({ext: data})
            except (ValueError, EOFError, OSError) as exc:
                # decode_sample names the member and says what is wrong with it (shards.npy_problem)
                problem = str(exc).splitlines()[0]
                if not problem.startswith(f"member {ext}"):
                    problem = f"member {ext}: {problem}"
                return DataError(join(self.url, raw["__shard__"]), f"sample {raw['__key__']}: {problem}")
        return DataError(join(self.url, raw["__shard__"]), f"sample {raw['__key__']}: undecodable")
