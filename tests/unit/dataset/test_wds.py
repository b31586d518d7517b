"""cotrain.dataset.wds: a converted dataset read through the real `webdataset` package's pipeline."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds

from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.reader import SourceReader
from cotrain.dataset.sequential import Dataset
from cotrain.dataset.shards import encode_npy
from cotrain.dataset.storage import StorageOptions
from cotrain.dataset.wds import open_wds, shard_urls
from cotrain.errors import DataError
from cotrain.media.image import decode_image
from tests.fixtures.cotrain_data import write_dataset


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("wds") / "robot", samples=23, per_shard=5,
                         cameras=("front", "wrist"), textured=True)


def _members(sample: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
        else:
            assert got[name] == value, name


def test_samples_equal_cotrain_reader(robot: Path) -> None:
    reader = SourceReader(str(robot), load_manifest(robot))
    got = list(open_wds(robot, images="jpeg"))
    assert len(got) == len(reader) == 23
    for i, sample in enumerate(got):
        _assert_same(_members(sample), _members(reader.read(i)))
        assert sample["__url__"] == str(robot / reader.locate(i)[0])


def test_rgb_images_decoded_through_cotrain_media(robot: Path) -> None:
    raw = next(Dataset.open(robot).iter_decoded())
    sample = next(iter(open_wds(robot)))
    for cam in ("front.jpg", "wrist.jpg"):
        assert sample[cam].dtype == np.uint8 and sample[cam].shape == (24, 32, 3)
        assert np.array_equal(sample[cam], decode_image(raw[cam]))
    assert isinstance(sample["state.npy"], np.ndarray) and isinstance(sample["instruction.txt"], str)
    assert sample["meta.json"] == {"modality": "robot", "index": 0}


def test_fluid_stages_compose(robot: Path) -> None:
    """The result is a wds pipeline: wds's own `.to_tuple` and `.batched` stages work on it."""
    batches = list(open_wds(robot, images="jpeg").to_tuple("__key__", "state.npy").batched(4))
    assert [len(b[0]) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert batches[0][1].shape == (4, 4)  # wds collates the arrays itself


def _keys(pipeline: wds.FluidWrapper) -> list[str]:
    return [s["__key__"] for s in pipeline]


def test_two_workers_cover_every_sample_once(robot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = _keys(open_wds(robot, images="jpeg"))
    parts = []
    for worker in range(2):  # wds.split_by_worker reads the worker from WORKER/NUM_WORKERS
        monkeypatch.setenv("WORKER", str(worker))
        monkeypatch.setenv("NUM_WORKERS", "2")
        parts.append(_keys(open_wds(robot, images="jpeg")))
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything) and len(everything) == 23


def test_real_dataloader_workers_split_shards(robot: Path) -> None:
    loader = torch.utils.data.DataLoader(open_wds(robot, images="jpeg").to_tuple("__key__"), batch_size=None,
                                         num_workers=2, multiprocessing_context="fork")
    keys = [k for (k,) in loader]
    assert sorted(keys) == sorted(_keys(open_wds(robot, images="jpeg"))) and len(set(keys)) == 23


def test_ranks_split_with_node_splitter(robot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        parts.append(set(_keys(open_wds(robot, images="jpeg"))))
    assert all(parts) and sum(map(len, parts)) == 23 and len(set.union(*parts)) == 23


def test_shard_shuffle_is_seeded(robot: Path) -> None:
    def shards(seed: int) -> list[str]:
        return list(dict.fromkeys(s["__url__"] for s in open_wds(robot, images="jpeg", shard_shuffle_seed=seed)))

    assert shards(1) == shards(1) and sorted(shards(1)) == sorted(shard_urls(robot))
    assert any(shards(s) != shard_urls(robot) for s in (1, 2, 3))


def test_only_manifest_shards_are_read(robot: Path, tmp_path: Path) -> None:
    import shutil

    ds = Path(shutil.copytree(robot, tmp_path / "ds"))
    shutil.copy(ds / "shard-000000.tar", ds / "shard-000099.tar")  # a stray shard no manifest lists
    (ds / "notes.tar").write_bytes(b"not a tar")
    assert [Path(u).name for u in shard_urls(ds)] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert len(_keys(open_wds(ds))) == 23


class _Boom:
    """Unpickling this calls `_record`: proof that a member was unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record, ())


UNPICKLED: list[bool] = []


def _record() -> None:
    UNPICKLED.append(True)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("ext", ["pyd", "pickle"])
def test_pickle_member_is_refused_not_decoded(robot: Path, tmp_path: Path, ext: str) -> None:
    import shutil

    ds = Path(shutil.copytree(robot, tmp_path / "ds"))
    _tar(ds / "shard-000001.tar", {"a_000001.state.npy": encode_npy(np.zeros(3, np.float32)),
                                   f"a_000001.{ext}": pickle.dumps(_Boom())})
    UNPICKLED.clear()
    with pytest.raises(DataError, match=rf"shard-000001.tar.*refused member extension '{ext}'"):
        list(open_wds(ds))
    assert not UNPICKLED
    with pytest.raises(DataError):  # a webdataset handler that warns and continues still never unpickles
        list(open_wds(ds, handler=wds.warn_and_continue))
    assert not UNPICKLED


def test_object_npy_is_refused(robot: Path, tmp_path: Path) -> None:
    import shutil

    ds = Path(shutil.copytree(robot, tmp_path / "ds"))
    buf = io.BytesIO()
    np.save(buf, np.array([_Boom()], dtype=object), allow_pickle=True)
    _tar(ds / "shard-000000.tar", {"k0.state.npy": buf.getvalue()})
    UNPICKLED.clear()
    with pytest.raises(DataError, match=r"shard-000000.tar.*sample 'k0', member state.npy: .*Python objects"):
        list(open_wds(ds))
    assert not UNPICKLED


def test_missing_shard_names_it(robot: Path, tmp_path: Path) -> None:
    import shutil

    ds = Path(shutil.copytree(robot, tmp_path / "ds"))
    (ds / "shard-000002.tar").unlink()
    with pytest.raises(DataError, match="shard-000002.tar.*missing"):
        list(open_wds(ds))


def test_bad_images_argument() -> None:
    with pytest.raises(ValueError, match="images='png'"):
        open_wds("nowhere", images="png")  # type: ignore[arg-type]


@pytest.mark.slow
def test_s3_url_with_storage_options(robot: Path) -> None:
    from tests.fixtures.s3server import S3Server

    with S3Server() as server:
        server.upload(robot, "s3://cotrain-wds/robot")
        options = StorageOptions(endpoint_url=server.endpoint)
        got = list(open_wds("s3://cotrain-wds/robot", storage_options=options, images="jpeg"))
    want = list(open_wds(robot, images="jpeg"))
    assert len(got) == len(want) == 23
    for a, b in zip(got, want, strict=True):
        _assert_same(_members(a), _members(b))
    assert got[0]["__url__"] == "s3://cotrain-wds/robot/shard-000000.tar"
