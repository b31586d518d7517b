"""The fast tar header scan gives tarfile's answers on every tar dialect writers produce, and
clear errors where tarfile would stop quietly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cotrain.dataset import shard_scan
from cotrain.dataset.shards import ShardWriter, encode_json, index_shard
from cotrain.errors import DataError


def reference(path: Path) -> list[tuple[str, int, int]]:
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isfile()]


def write_tar(path: Path, fmt: int, members: list[tuple[str, bytes]], *, float_mtime: bool = False) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        if fmt == tarfile.GNU_FORMAT:  # a directory entry: skipped, as tarfile's isfile() does
            folder = tarfile.TarInfo("somedir")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000.25 if float_mtime else 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


MEMBERS = [
    ("s000.state.npy", b"x" * 700),
    ("s000.meta.json", b"{}"),
    ("d" * 90 + "/" + "s001.instruction.txt", "pick the ü cup".encode()),  # > 100 chars with its prefix
    ("s002." + "long" * 30 + ".txt", b""),  # a 130-character name: pax path / GNU long name
    ("s003.image.jpg", bytes(range(256)) * 9),
]


@pytest.mark.parametrize("fmt,float_mtime", [(tarfile.PAX_FORMAT, True), (tarfile.PAX_FORMAT, False),
                                             (tarfile.GNU_FORMAT, False)])
def test_scan_matches_tarfile(tmp_path: Path, fmt: int, float_mtime: bool) -> None:
    members = MEMBERS
    path = write_tar(tmp_path / "a.tar", fmt, members, float_mtime=float_mtime)
    got = list(shard_scan.scan_path(path))
    assert got == reference(path)
    assert [name for name, *_ in got] == [name for name, _ in members]
    with open(path, "rb") as fh:  # the file-object route (remote shards) agrees
        assert list(shard_scan.scan_file(fh, "a.tar")) == got
    data = path.read_bytes()
    assert [data[o: o + n] for _, o, n in got] == [d for _, d in members]


def test_ustar_prefix_names(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "u.tar", tarfile.USTAR_FORMAT, MEMBERS[:3])
    assert list(shard_scan.scan_path(path)) == reference(path)


def test_cotrain_and_webdataset_shards(tmp_path: Path) -> None:
    import webdataset as wds

    ours = tmp_path / "ours.tar"
    with open(ours, "wb") as fh:
        writer = ShardWriter(fh)
        for i in range(5):
            writer.write(f"k{i}", {"meta.json": encode_json({"i": i}), "instruction.txt": b"go"})
        writer.close()
    theirs = tmp_path / "wds.tar"
    with wds.TarWriter(str(theirs)) as sink:  # pax headers with float mtimes on every member
        for i in range(5):
            sink.write({"__key__": f"k{i}", "meta.json": b"{}", "instruction.txt": b"go"})
    for path in (ours, theirs):
        assert list(shard_scan.scan_path(path)) == reference(path)
    assert [k for k, _ in index_shard(theirs)] == [f"k{i}" for i in range(5)]


def test_damage_is_a_clear_error(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "a.tar", tarfile.PAX_FORMAT, MEMBERS)
    good = path.read_bytes()
    name, offset, size = reference(path)[4]
    header = offset - 512

    flipped = bytearray(good)
    flipped[header + 2] ^= 0x01  # a bit of the member name: the checksum no longer matches
    path.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=rf"a\.tar: unreadable member header at byte {header}; "
                                        rf"the last {len(good) - header} bytes were not read"):
        list(shard_scan.scan_path(path))

    path.write_bytes(good[: offset + size // 2])  # cut inside the member's data
    with pytest.raises(DataError, match=rf"truncated tar: member at byte {header} needs {size} bytes of data"):
        list(shard_scan.scan_path(path))

    path.write_bytes(good[: header + 100])  # cut inside a header
    with pytest.raises(DataError, match=rf"truncated tar: 100 bytes at byte {header} are less than a header"):
        list(shard_scan.scan_path(path))

    path.write_bytes(b"")
    assert list(shard_scan.scan_path(path)) == []


def test_sidecar_index_round_trip_and_refusals(tmp_path: Path) -> None:
    """The sidecar equals a scan; one whose spans leave the shard, or whose names a scan would refuse,
    is an error naming the sidecar (the reader then scans instead)."""
    import json

    from cotrain.dataset.shard_index import ShardIndex, index_name, parse_index, write_index

    path = tmp_path / "shard-000000.tar"
    with open(path, "wb") as fh:
        writer = ShardWriter(fh)
        for i in range(3):
            writer.write(f"k{i}", {"meta.json": encode_json({"i": i}), "image.jpg": b"\xff" * (100 + i)})
        writer.close()
    write_index(path)
    text = (tmp_path / index_name(path.name)).read_text()
    size = path.stat().st_size
    index = parse_index(text.encode(), "i.json", size, 3)
    assert index == ShardIndex.from_rows(index_shard(path))
    ref = {name: (offset, n) for name, offset, n in reference(path)}
    image, meta = ref["k2.image.jpg"], ref["k2.meta.json"]
    assert index.members(2) == ("k2", [("image.jpg", *image), ("meta.json", *meta)], image[0], sum(meta))
    doc = json.loads(text)
    for change, message in ((("offsets", 5, size), "a member lies outside the shard"),
                            (("layouts", 0, ["image.pickle", "meta.json"]), "refused member extension 'image.pickle'")):
        bad = json.loads(text)
        bad[change[0]][change[1]] = change[2]
        with pytest.raises(DataError, match=f"i.json.*: {message}"):
            parse_index(json.dumps(bad).encode(), "i.json", size, 3)
    with pytest.raises(DataError, match="describes a shard of .* bytes and 3 samples; the manifest lists 10 bytes"):
        parse_index(text.encode(), "i.json", 10, 3)
    assert doc["keys"] == ["k0", "k1", "k2"]


def test_sidecar_of_an_empty_shard(tmp_path: Path) -> None:
    from cotrain.dataset.shard_index import index_name, parse_index, write_index

    path = tmp_path / "shard-000000.tar"
    with open(path, "wb") as fh:
        ShardWriter(fh).close()
    write_index(path)
    index = parse_index((tmp_path / index_name(path.name)).read_bytes(), "i.json", path.stat().st_size, 0)
    assert index is not None and len(index) == 0  # a valid, empty index (readers must not take it for "none")
