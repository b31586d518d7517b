"""A shard's member index (where each sample's members lie), and its sidecar file.

The converters write `shard-000000.tar.idx.json` beside each shard: what a header scan of the tar
gives, so a reader need not scan. The scan costs ~25 us per sample in Python, once per shard and
process, and on object storage it reads nearly every byte of the shard; the sidecar is one small
read. A reader trusts a sidecar only when it records the byte size and sample count the manifest
lists for its shard (and it is well formed); otherwise it scans, so a stale or damaged sidecar costs
speed, never correctness. `cotrain validate` compares every sidecar with a scan.

Sidecar (JSON): {"version": 1, "shard_bytes": N, "keys": [key per sample], "layouts": [[member name,
...], ...], "layout_of": [layout number per sample], "offsets": [data offset per member], "sizes":
[size per member]}: members in file order, sample i's names being layouts[layout_of[i]].
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.atomic import write_text_atomic
from cotrain.dataset import keys
from cotrain.dataset.shards import MemberSpan, check_member, index_shard
from cotrain.errors import DataError

INDEX_SUFFIX = ".idx.json"
VERSION = 1


class ShardIndex:
    """One shard's member index, compact: spans in flat arrays, member names shared by layout
    (~200 bytes per sample of 6 members, mostly the key, against ~1.4 KB as dicts)."""

    def __init__(self, keys: list[str], layouts: list[tuple[str, ...]], layout_of: np.ndarray,
                 offsets: np.ndarray, sizes: np.ndarray) -> None:
        self.keys, self.layouts, self.layout_of = keys, layouts, layout_of
        self.offsets, self.sizes = offsets, sizes
        self.first = np.zeros(len(keys) + 1, np.int64)  # sample i's members are [first[i], first[i+1])
        np.cumsum(np.array([len(lay) for lay in layouts], np.int64)[layout_of], out=self.first[1:])
        # Every sample has at least one member (a layout is never empty), so no segment is empty.
        heads = self.first[:-1]
        self.starts = np.minimum.reduceat(offsets, heads) if len(keys) else heads
        self.ends = np.maximum.reduceat(offsets + sizes, heads) if len(keys) else heads

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, dict[str, MemberSpan]]]) -> ShardIndex:
        """From `index_shard` output."""
        layouts: dict[tuple[str, ...], int] = {}
        layout_of = np.array([layouts.setdefault(tuple(spans), len(layouts)) for _, spans in rows], np.int32)
        flat = np.array([span for _, spans in rows for span in spans.values()], np.int64).reshape(-1, 2)
        return cls([key for key, _ in rows], list(layouts), layout_of, flat[:, 0].copy(), flat[:, 1].copy())

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ShardIndex) and self.keys == other.keys
                and [self.layouts[i] for i in self.layout_of] == [other.layouts[i] for i in other.layout_of]
                and np.array_equal(self.offsets, other.offsets) and np.array_equal(self.sizes, other.sizes))

    def members(self, i: int) -> tuple[str, list[tuple[str, int, int]], int, int]:
        """Key, (name, offset, size) per member, and the byte range [start, end) of sample `i`."""
        a, b = int(self.first[i]), int(self.first[i + 1])
        names = self.layouts[self.layout_of[i]]
        spans = list(zip(names, self.offsets[a:b].tolist(), self.sizes[a:b].tolist()))
        return self.keys[i], spans, int(self.starts[i]), int(self.ends[i])

    def to_json(self, shard_bytes: int) -> str:
        return json.dumps({"version": VERSION, "shard_bytes": shard_bytes, "keys": self.keys,
                           "layouts": [list(lay) for lay in self.layouts], "layout_of": self.layout_of.tolist(),
                           "offsets": self.offsets.tolist(), "sizes": self.sizes.tolist()}, separators=(",", ":"))


def index_name(shard: str) -> str:
    """The file name of a shard's index sidecar."""
    return shard + INDEX_SUFFIX


def write_index(shard: Path) -> None:
    """Scan a finished shard and write its sidecar beside it (atomically)."""
    index = ShardIndex.from_rows(index_shard(shard))
    write_text_atomic(shard.with_name(index_name(shard.name)), index.to_json(shard.stat().st_size))


def sidecar_problem(shard: Path, shard_bytes: int, samples: int) -> str | None:
    """What is wrong with an intact shard's sidecar, if it has one (readers trust a sidecar that
    matches the manifest's size and count, so `cotrain validate` checks its spans against a scan)."""
    path = shard.with_name(index_name(shard.name))
    if not path.is_file():
        return None
    try:
        sidecar = parse_index(path.read_bytes(), path.name, shard_bytes, samples)
    except DataError as exc:
        return exc.problem
    if sidecar != ShardIndex.from_rows(index_shard(shard)):
        return "does not match its shard's members; delete it (readers then scan the shard) or reconvert"
    return None


def parse_index(data: bytes, where: str, shard_bytes: int, samples: int) -> ShardIndex:
    """A sidecar's index, checked against its shard's size and count and for internal consistency
    (names validated as a scan would); DataError says what does not hold."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(where, f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise DataError(where, f"not a version-{VERSION} shard index")
    if doc.get("shard_bytes") != shard_bytes or len(doc.get("keys") or []) != samples:
        raise DataError(where, f"describes a shard of {doc.get('shard_bytes')} bytes and {len(doc.get('keys') or [])} "
                               f"samples; the manifest lists {shard_bytes} bytes and {samples} samples")
    try:
        index = _arrays(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(where, f"malformed shard index ({exc})") from None
    _check(index, where, shard_bytes)
    return index


def _arrays(doc: dict[str, Any]) -> ShardIndex:
    layouts = [tuple(str(n) for n in lay) for lay in doc["layouts"]]
    layout_of = np.asarray(doc["layout_of"], np.int32).reshape(-1)
    offsets, sizes = np.asarray(doc["offsets"], np.int64).reshape(-1), np.asarray(doc["sizes"], np.int64).reshape(-1)
    if any(len(lay) == 0 for lay in layouts) or len(layout_of) != len(doc["keys"]):
        raise ValueError("layouts and samples do not match")
    if layout_of.size and (layout_of.min() < 0 or layout_of.max() >= len(layouts)):
        raise ValueError("a layout number is out of range")
    members = int(np.array([len(lay) for lay in layouts], np.int64)[layout_of].sum()) if layouts else 0
    if members != len(offsets) or len(offsets) != len(sizes):
        raise ValueError("member counts do not match")
    return ShardIndex([str(k) for k in doc["keys"]], layouts, layout_of, offsets, sizes)


def _check(index: ShardIndex, where: str, shard_bytes: int) -> None:
    if index.offsets.size and (index.offsets.min() < 0 or index.sizes.min() < 0
                               or (index.offsets + index.sizes).max() > shard_bytes):
        raise DataError(where, "a member lies outside the shard")
    bad = next((k for k in index.keys if not keys.is_valid_key(k)), None)
    if bad is not None:
        raise DataError(where, f"invalid sample key {bad!r}")
    first_user = {int(lay): index.keys[i] for i, lay in reversed(list(enumerate(index.layout_of)))}
    for number, key in first_user.items():  # each layout's names, as the first sample using it
        for name in index.layouts[number]:
            check_member(key, name, where)
