"""Random access to the samples of one converted dataset, by global sample index.

Sample i lies in the shard whose cumulative count covers i (counts from the manifest). Each shard's
member index (tar header scan, done once per shard and process, kept in an LRU) gives the byte
span of the sample; its members are adjacent, so one ranged read fetches the whole sample.

The sampler draws a source's samples in one permutation over all its shards, so consecutive reads
hit shards at random: the LRU must hold every shard of a typical source, or nearly every read
re-scans a whole shard. Indices are therefore compact (flat numpy spans: ~200 bytes per sample of 6
members, mostly the key, against ~1.4 KB as dicts), and the default keeps 1,024 shards: a source of
up to a million samples at the converters' 1,000 per shard, ~200 MB per process when all are held.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from itertools import accumulate
from typing import Any

import numpy as np

from cotrain.errors import DataError
from cotrain.manifest import Manifest
from cotrain.mix.storage import RangeReader, join
from cotrain.shards import MemberSpan, decode_sample, index_shard



class ShardIndex:
    """One shard's member index, compact: member spans in flat arrays, member names by layout."""

    def __init__(self, rows: list[tuple[str, dict[str, MemberSpan]]]) -> None:
        self.keys = [key for key, _ in rows]
        layouts: dict[tuple[str, ...], int] = {}
        self.layout_of = np.array([layouts.setdefault(tuple(spans), len(layouts)) for _, spans in rows], np.int32)
        self.layouts = list(layouts)
        self.first = np.zeros(len(rows) + 1, np.int64)  # sample i's members are [first[i], first[i+1])
        np.cumsum([len(spans) for _, spans in rows], out=self.first[1:])
        flat = np.array([span for _, spans in rows for span in spans.values()], np.int64).reshape(-1, 2)
        self.offsets, self.sizes = flat[:, 0].copy(), flat[:, 1].copy()
        # Every sample has at least one member (index_shard starts a sample at its first), so no
        # segment of the reductions is empty.
        heads = self.first[:-1]
        self.starts = np.minimum.reduceat(self.offsets, heads) if len(rows) else heads
        self.ends = np.maximum.reduceat(self.offsets + self.sizes, heads) if len(rows) else heads

    def __len__(self) -> int:
        return len(self.keys)

    def members(self, i: int) -> tuple[str, list[tuple[str, int, int]], int, int]:
        """Key, (name, offset, size) per member, and the byte range [start, end) of sample `i`."""
        a, b = int(self.first[i]), int(self.first[i + 1])
        names = self.layouts[self.layout_of[i]]
        spans = list(zip(names, self.offsets[a:b].tolist(), self.sizes[a:b].tolist()))
        return self.keys[i], spans, int(self.starts[i]), int(self.ends[i])


class SourceReader:
    """Reads raw samples of one dataset.

    Args:
        url: dataset directory or URL.
        manifest: its manifest (shard names and counts).
        max_indexed_shards: shard indices kept in memory per process.
    """

    def __init__(self, url: str, manifest: Manifest, max_indexed_shards: int = 1024) -> None:
        self.url = url
        self.manifest = manifest
        self._bounds = list(accumulate(s.samples for s in manifest.shards))
        self._files = RangeReader(url)
        self._indices: OrderedDict[str, ShardIndex] = OrderedDict()
        self._max = max_indexed_shards

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
        local = self._files.local_path(shard)
        try:
            if local is not None:
                index = index_shard(local)
            else:
                with self._files.open(shard) as fh:
                    index = index_shard(fh, join(self.url, shard))
        except (OSError, EOFError) as exc:
            raise DataError(join(self.url, shard), f"unreadable shard: {exc}") from None
        rows = ShardIndex(index)
        self._indices[shard] = rows
        if len(self._indices) > self._max:
            self._indices.popitem(last=False)
        return rows

    def read_raw(self, index: int) -> dict[str, Any]:
        shard, local = self.locate(index)
        entries = self._index(shard)
        if local >= len(entries):
            raise DataError(join(self.url, shard), f"holds {len(entries)} samples, manifest says more (sample {local})")
        key, spans, start, end = entries.members(local)
        block = self._files.read(shard, start, end - start)
        raw: dict[str, Any] = {"__key__": key, "__shard__": shard}
        for ext, offset, size in spans:
            raw[ext] = block[offset - start: offset - start + size]
        return raw

    def read(self, index: int) -> dict[str, Any]:
        """Decoded sample: npy/json/txt members decoded, images still JPEG bytes."""
        return decode_sample(self.read_raw(index))
