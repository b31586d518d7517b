"""Object storage end to end, against moto's S3 server on 127.0.0.1 (real HTTP, real s3fs).

Bytes are counted where the server sends them (tests/fixtures/s3server.py), so "one ranged read per
sample" is checked as bytes on the wire against each sample's span in its shard. Also: storage
options in the mixture YAML and on the dataset commands, the one-line error for a missing back end,
and Hugging Face `datasets` reading a converted folder the way docs/format.md says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cotrain.cli.app import app
from cotrain.dataset.reader import SourceReader
from cotrain.dataset.shard_index import index_name
from cotrain.dataset.storage import StorageOptions, read_manifest
from cotrain.dataset.validate import validate
from cotrain.errors import ConfigError, DataError
from cotrain.mix.loader import MixtureLoader
from cotrain.mix.resolve import load_mixture
from tests.fixtures.cotrain_data import write_dataset
from tests.fixtures.s3server import S3Server
from tests.helpers import ROOT

URL = "s3://cotrain-test/robot"
# Everything but the body of a ranged GET: status line and headers (~450 bytes from moto).
HEADER_BYTES = 1024


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 samples in 3 shards, two 224 px cameras with real-looking JPEG sizes (no embodiment: the
    fixture's meta.json names none, and `validate` would say so)."""
    return write_dataset(tmp_path_factory.mktemp("s3") / "robot", samples=60, per_shard=20, image_hw=(224, 224),
                         cameras=("front", "wrist"), textured=True, embodiment=None)  # type: ignore[arg-type]  # the fixture's keyword dict is typed loosely


@pytest.fixture(scope="module")
def server(local_ds: Path) -> Iterator[S3Server]:
    with S3Server() as srv:
        srv.upload(local_ds, URL)
        yield srv


@pytest.fixture
def options(server: S3Server) -> StorageOptions:
    server.reset()
    return StorageOptions(endpoint_url=server.endpoint)


def _mixture(tmp_path: Path, path: str, storage: dict[str, object] | None) -> Path:
    source: dict[str, object] = {"path": path}
    if storage is not None:
        source["storage_options"] = storage
    doc = {"name": "s3", "seed": 3, "batch_size": 4, "image_size": 32, "sources": {"robot": source},
           "phases": [{"name": "only", "steps": 3, "weights": {"robot": 1.0}}]}
    out = tmp_path / f"mix-{len(list(tmp_path.glob('mix-*')))}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


# ----------------------------------------------------------------------------- reads and bytes moved


def test_one_ranged_read_per_sample(local_ds: Path, server: S3Server, options: StorageOptions) -> None:
    manifest = read_manifest(URL, options)
    reader = SourceReader(URL, manifest, options)
    local = SourceReader(str(local_ds), manifest)
    picks = [0, 7, 19, 20, 33, 59, 41, 1]
    reader.read_raw(picks[0]), reader.read_raw(20), reader.read_raw(40)  # load the three member indices
    index_gets = [r for r in server.requests if r.method == "GET" and r.path.endswith(".idx.json")]
    assert len(index_gets) == 3 and not any(r.path.endswith(".tar") and r.range is None for r in server.requests)
    server.reset()
    for i in picks:
        assert reader.read_raw(i) == local.read_raw(i)
    assert [r.method for r in server.requests] == ["GET"] * len(picks)  # one request per sample, nothing else
    for i, request in zip(picks, server.requests):
        shard, at = local.locate(i)
        _, _, first, end = local._index(shard).members(at)
        start = max(0, first - 512)  # the tar header block in front of the first member comes along (checked)
        assert (request.path, request.range) == (f"/cotrain-test/robot/{shard}", f"bytes={start}-{end - 1}")
        assert end - start <= request.bytes_sent <= end - start + HEADER_BYTES
    spans = sum(r.bytes_sent for r in server.requests)
    assert spans / len(picks) > 5_000  # two real 224 px JPEGs per sample: the reads are not empty


def test_index_read_once_per_shard_and_process(server: S3Server, options: StorageOptions) -> None:
    reader = SourceReader(URL, read_manifest(URL, options), options)
    server.reset()
    for i in range(0, 20, 2):  # all in shard 0
        reader.read_raw(i)
    gets = [r.path.rsplit("/", 1)[-1] for r in server.requests if r.method == "GET"]
    assert gets == [index_name("shard-000000.tar")] + ["shard-000000.tar"] * 10


def test_without_sidecar_the_shard_is_scanned(local_ds: Path, server: S3Server, options: StorageOptions,
                                               tmp_path: Path) -> None:
    import shutil

    bare = Path(shutil.copytree(local_ds, tmp_path / "bare"))
    for sidecar in bare.glob("*.idx.json"):
        sidecar.unlink()
    url = server.upload(bare, "s3://cotrain-test/bare")
    reader = SourceReader(url, read_manifest(url, options), options)
    assert reader.read_raw(25) == SourceReader(str(local_ds), read_manifest(local_ds)).read_raw(25)


def test_mixture_loader_from_yaml_storage_options(local_ds: Path, server: S3Server, tmp_path: Path) -> None:
    remote = load_mixture(_mixture(tmp_path, URL, {"endpoint_url": server.endpoint}))
    assert remote.sources[0].storage_options == StorageOptions(endpoint_url=server.endpoint)
    here = load_mixture(_mixture(tmp_path, str(local_ds), None))
    got, want = list(MixtureLoader(remote)), list(MixtureLoader(here))
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert a.key == b.key
        assert np.array_equal(a.images.numpy(), b.images.numpy())
        assert np.array_equal(a.state.numpy(), b.state.numpy())


@pytest.mark.slow
def test_mixture_loader_workers_on_s3(local_ds: Path, server: S3Server, tmp_path: Path) -> None:
    """DataLoader workers open their own connections after the fork."""
    remote = load_mixture(_mixture(tmp_path, URL, {"endpoint_url": server.endpoint}))
    here = load_mixture(_mixture(tmp_path, str(local_ds), None))
    got = [b.key for b in MixtureLoader(remote, num_workers=1)]
    assert got == [b.key for b in MixtureLoader(here)]


# ----------------------------------------------------------------------------- options and errors


def test_storage_options_to_fsspec() -> None:
    opts = StorageOptions(endpoint_url="http://h:9000", profile="p", anonymous=True, region="eu-west-1",
                          requester_pays=True, extra={"use_ssl": False})
    assert opts.fsspec_kwargs("s3") == {"endpoint_url": "http://h:9000", "requester_pays": True, "profile": "p",
                                        "anon": True, "client_kwargs": {"region_name": "eu-west-1"}, "use_ssl": False}
    assert StorageOptions(anonymous=True, project="x").fsspec_kwargs("gs") == {"project": "x", "token": "anon"}
    with pytest.raises(ConfigError, match=r"storage_options.profile applies to s3://, s3a:// URLs, not gs://"):
        StorageOptions(profile="p").fsspec_kwargs("gs")


@pytest.mark.parametrize("storage, path, message", [
    ({"endpoint": "http://x"}, URL,
     r"sources.robot.storage_options.endpoint: unknown field \(did you mean 'endpoint_url'\?\); valid: anonymous,"),
    ({"anonymous": "maybe"}, URL, r"sources.robot.storage_options.anonymous: Input should be a valid boolean"),
    ({"profile": "p"}, "gs://b/robot", r"sources.robot: storage_options.profile applies to s3://, s3a:// URLs"),
    ({"anonymous": True}, "local/robot", r"sources.robot: .*local/robot: storage_options are for object-storage"),
])
def test_storage_options_errors_name_the_field(tmp_path: Path, storage: dict[str, object], path: str,
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_mixture(_mixture(tmp_path, path, storage))


def test_storage_options_need_a_path(tmp_path: Path) -> None:
    doc = {"name": "m", "batch_size": 2, "phases": [{"name": "a", "steps": 1, "weights": {"g": 1}}],
           "sources": {"g": {"mixture": "inner.yaml", "storage_options": {"anonymous": True}}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"sources.g: storage_options belong to a 'path' source"):
        load_mixture(tmp_path / "m.yaml")


@pytest.mark.parametrize("url, module, extra", [("s3://b/robot", "s3fs", "s3"), ("gs://b/robot", "gcsfs", "gcs")])
def test_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str) -> None:
    import importlib

    registry = importlib.import_module("fsspec.registry")._registry  # (`fsspec.registry` is a read-only view)
    monkeypatch.setitem(sys.modules, module, None)  # `import s3fs` now raises ImportError, as when not installed
    for protocol in ("s3", "s3a", "gs", "gcs"):  # forget back ends fsspec already imported
        monkeypatch.delitem(registry, protocol, raising=False)
    expected = (f"{url}: reading {url[:2]}:// needs an fsspec back end that is not installed: "
                f"pip install 'cotrain[{extra}]'")
    with pytest.raises(ConfigError) as err:
        read_manifest(url)
    assert str(err.value) == expected
    # The installed CLI (its `main` prints expected errors as one line), without the back end:
    code = f"import sys; sys.modules[{module!r}] = None; sys.argv = ['cotrain', 'inspect', {url!r}]; " \
           "from cotrain.cli.app import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", f"error: {expected}\n")


def test_missing_remote_dataset_is_one_line(server: S3Server, options: StorageOptions) -> None:
    with pytest.raises(DataError, match=r"^s3://cotrain-test/nothing: no manifest.json: not a converted dataset"):
        read_manifest("s3://cotrain-test/nothing", options)


# ----------------------------------------------------------------------------- dataset commands on URLs


def test_cli_inspect_validate_preview_on_s3(local_ds: Path, server: S3Server, tmp_path: Path) -> None:
    flag = ["-S", f"endpoint_url={server.endpoint}"]
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", URL, "--json", *flag])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["root"], summary["samples"], summary["shards"]) == (URL, 60, 3)

    server.reset()
    result = runner.invoke(app, ["validate", URL, *flag])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"validate {URL}: 3 shards, 60 samples checked: OK")
    on_disk = sum(p.stat().st_size for p in local_ds.iterdir() if p.name != "manifest.json")
    body = sum(r.bytes_sent for r in server.requests)
    assert on_disk <= body <= on_disk * 1.05 + 64 * 1024  # every shard and sidecar downloaded once

    result = runner.invoke(app, ["preview", URL, "--out", str(tmp_path / "s3.png"), "--seed", "5", *flag])
    assert result.exit_code == 0, result.output
    runner.invoke(app, ["preview", str(local_ds), "--out", str(tmp_path / "local.png"), "--seed", "5"])
    assert (tmp_path / "s3.png").read_bytes() == (tmp_path / "local.png").read_bytes()


@pytest.mark.slow  # the worker pool spawns two processes
def test_validate_on_s3_finds_damage(local_ds: Path, server: S3Server, tmp_path: Path) -> None:
    import shutil

    bad = Path(shutil.copytree(local_ds, tmp_path / "bad"))
    data = bytearray((bad / "shard-000001.tar").read_bytes())
    data[-3000] ^= 0xFF  # a byte of the last sample: its hash (at least) changes
    (bad / "shard-000001.tar").write_bytes(bytes(data))
    (bad / "shard-000002.tar").unlink()
    (bad / "stray.tar").write_bytes(b"")
    url = server.upload(bad, "s3://cotrain-test/bad")
    remote = validate(url, storage_options=StorageOptions(endpoint_url=server.endpoint))
    assert [str(p) for p in remote.problems] == [str(p) for p in validate(bad).problems]
    in_pool = validate(url, workers=2, storage_options=StorageOptions(endpoint_url=server.endpoint))
    assert in_pool.problems == remote.problems  # spawned workers get the options and connect themselves
    assert not remote.ok and any("shard-000002.tar: missing" in str(p) for p in remote.problems)
    assert any(str(p) == "stray.tar: unexpected tar file: not listed in the manifest" for p in remote.problems)


def test_cli_storage_option_errors() -> None:
    result = CliRunner().invoke(app, ["inspect", URL, "-S", "endpoint=http://x"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == ("--storage-option endpoint: Extra inputs are not permitted; valid keys: "
                                     "endpoint_url, profile, anonymous, region, project, requester_pays, extra")
    result = CliRunner().invoke(app, ["inspect", URL, "-S", "anonymous"])
    assert isinstance(result.exception, ConfigError) and "expected KEY=VALUE" in str(result.exception)


# ----------------------------------------------------------------------------- Hugging Face datasets


@pytest.mark.parametrize("where", ["local", "s3"])
def test_hf_datasets_reads_the_documented_pattern(local_ds: Path, server: S3Server, tmp_path: Path,
                                                  where: str) -> None:
    """docs/format.md: `load_dataset("webdataset", data_files={"train": f"{OUT}/shard-*.tar"})`."""
    import datasets

    out, extra = (str(local_ds), {}) if where == "local" else (URL, {"storage_options": server.storage_options()})
    ds = datasets.load_dataset("webdataset", data_files={"train": f"{out}/shard-*.tar"}, split="train",
                               cache_dir=str(tmp_path / "hf"), **extra)
    reader = SourceReader(str(local_ds), read_manifest(local_ds))
    assert len(ds) == 60
    for i in (0, 31, 59):
        row, ours = ds[i], reader.read(i)
        assert row["__key__"] == ours["__key__"]
        assert np.array_equal(np.asarray(row["state.npy"], np.float32), ours["state.npy"])
        assert np.array_equal(np.asarray(row["actions.npy"], np.float32), ours["actions.npy"])
        assert row["instruction.txt"] == ours["instruction.txt"] and row["meta.json"] == ours["meta.json"]
        assert row["front.jpg"].size == (224, 224)


@pytest.mark.slow
def test_storage_bench_quick(tmp_path: Path) -> None:
    """benchmarks/storage_bench.py runs and its figures agree with each other (bytes, not time)."""
    out = tmp_path / "storage.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "storage_bench.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    old, new = doc["paths"]["open_seek_read"], doc["paths"]["cat_file_range"]
    assert new["requests"] == doc["reads"] == 10
    assert 1.0 < new["ratio_to_sample_bytes"] < 1.0 + 10 * HEADER_BYTES / doc["sample_bytes_total"]
    assert old["bytes_moved"] > new["bytes_moved"]
    assert doc["old_over_new_bytes"] == pytest.approx(old["bytes_moved"] / new["bytes_moved"], rel=1e-2)


def test_webdataset_reads_the_shards(local_ds: Path) -> None:
    """docs/format.md: webdataset's own reader with a brace range over the shard names."""
    import webdataset as wds

    got = [s["__key__"] for s in wds.WebDataset(f"{local_ds}/shard-{{000000..000002}}.tar", shardshuffle=False)]
    reader = SourceReader(str(local_ds), read_manifest(local_ds))
    assert got == [reader.read_raw(i)["__key__"] for i in range(60)]
