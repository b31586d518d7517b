"""Random access to the samples of one converted dataset, by global sample index.

Sample i lies in the shard whose cumulative count covers i (counts from the manifest). Each shard's
member index (tar header scan, done once per shard and process, kept in a small LRU) gives the byte
span of the sample; its members are adjacent, so one ranged read fetches the whole sample.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from itertools import accumulate
from typing import Any

from cotrain.errors import DataError
from cotrain.manifest import Manifest
from cotrain.mix.storage import RangeReader, join
from cotrain.shards import MemberSpan, decode_sample, index_shard

# Per sample: key, member spans, and the byte range [start, end) holding all its members.
ShardIndex = list[tuple[str, dict[str, MemberSpan], int, int]]


class SourceReader:
    """Reads raw samples of one dataset.

    Args:
        url: dataset directory or URL.
        manifest: its manifest (shard names and counts).
        max_indexed_shards: shard indices kept in memory per process.
    """

    def __init__(self, url: str, manifest: Manifest, max_indexed_shards: int = 64) -> None:
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
        rows = [(key, spans, min(m.offset for m in spans.values()), max(m.offset + m.size for m in spans.values()))
                for key, spans in index]
        self._indices[shard] = rows
        if len(self._indices) > self._max:
            self._indices.popitem(last=False)
        return rows

    def read_raw(self, index: int) -> dict[str, Any]:
        shard, local = self.locate(index)
        entries = self._index(shard)
        if local >= len(entries):
            raise DataError(join(self.url, shard), f"holds {len(entries)} samples, manifest says more (sample {local})")
        key, spans, start, end = entries[local]
        block = self._files.read(shard, start, end - start)
        raw: dict[str, Any] = {"__key__": key, "__shard__": shard}
        for ext, span in spans.items():
            raw[ext] = block[span.offset - start: span.offset - start + span.size]
        return raw

    def read(self, index: int) -> dict[str, Any]:
        """Decoded sample: npy/json/txt members decoded, images still JPEG bytes."""
        return decode_sample(self.read_raw(index))
