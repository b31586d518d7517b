"""The rlds converter on hand-written TFDS/RLDS TFRecord folders (writer: tests/fixtures/rlds.py)."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RunOptions
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain_converters.rlds import tfrecord
from cotrain_converters.rlds.converter import RldsOptions, list_units
from cotrain_converters.rlds.oxe_table import load_table
from cotrain_converters.rlds.tf_example import decode_bytes, decode_floats, decode_int64s, find_feature, parse_example
from tests.fixtures import rlds as fx
from tests.helpers import run_cli

STEPS = (9, 12, 10, 11)


def opts(**kw: Any) -> RldsOptions:
    return RldsOptions(**{"embodiment": "demo", "source_fps": 10.0, "shard_size": 20, **kw})


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> fx.RldsFixture:
    return fx.write_rlds(tmp_path_factory.mktemp("rlds"), steps=STEPS)


@pytest.fixture(scope="module")
def converted(raw: fx.RldsFixture, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("conv") / "out"
    convert("rlds", raw.root.parent, out, opts())  # the dataset folder: its one version is found
    return Dataset.open(out)


def fresh_copy(raw: fx.RldsFixture, tmp_path: Path) -> Path:
    """A private copy of the fixture's version folder, to damage."""
    return Path(shutil.copytree(raw.root, tmp_path / "demo_rlds" / "1.0.0"))


def by_episode(ds: Dataset) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for s in ds.iter_decoded():
        out.setdefault(s["meta.json"]["episode_index"], []).append(s)
    return out


# ------------------------------------------------------------------------------------------------ CRC


@pytest.mark.parametrize("data, expected", [
    (b"123456789", 0xE3069283), (b"", 0x00000000),
    (bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4 vectors
    (bytes(range(32)), 0x46DD794E), (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert tfrecord.crc32c(data) == expected
    assert fx.crc32c(data) == expected


def test_masked_crc_frames_records_like_the_fixture_writer() -> None:
    payload = b"\x0a\x00" * 40
    assert tfrecord.masked_crc32c(payload) == fx.masked(payload)
    record = fx.frame(payload)
    assert struct.unpack("<I", record[8:12])[0] == tfrecord.masked_crc32c(record[:8])


# ------------------------------------------------------------------------------------------- protobuf


def example_class(packed: bool) -> Any:
    """tf.train.Example built with the protobuf runtime (proto2, explicit packing) as an independent codec."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    pkg = f"cotrain_test_{'packed' if packed else 'unpacked'}"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{pkg}.proto", package=pkg, syntax="proto2")

    def message(name: str, *fields: tuple[str, int, int, str | None, int]) -> descriptor_pb2.DescriptorProto:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name, label in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{pkg}.{type_name}"
            if fname == "value" and ftype in (F.TYPE_FLOAT, F.TYPE_INT64):
                f.options.packed = packed
        return msg

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, F.TYPE_BYTES, None, rep))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, None, rep))
    message("Int64List", ("value", 1, F.TYPE_INT64, None, rep))
    feature = message("Feature", ("bytes_list", 1, F.TYPE_MESSAGE, "BytesList", opt),
                      ("float_list", 2, F.TYPE_MESSAGE, "FloatList", opt),
                      ("int64_list", 3, F.TYPE_MESSAGE, "Int64List", opt))
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, "Features.FeatureEntry", rep))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=f".{pkg}.Feature")
    message("Example", ("features", 1, F.TYPE_MESSAGE, "Features", opt))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.Example"))


INTS = [0, 1, -1, 127, 128, 300, -300, 2**31, -(2**31), 2**63 - 1, -(2**63)]
FLOATS = np.float32([0.0, -1.5, 3.25, 1e-30, -7e20, np.inf]).tolist()  # float32-exact
BYTES = [b"", b"\x00\xff\x80", "héllo".encode(), b"x" * 300]


@pytest.mark.parametrize("packed", [True, False])
def test_hand_parser_agrees_with_protobuf_runtime(packed: bool, tmp_path: Path) -> None:
    Example = example_class(packed)
    ex = Example()
    ex.features.feature["steps/ints"].int64_list.value.extend(INTS)
    ex.features.feature["steps/floats"].float_list.value.extend(FLOATS)
    ex.features.feature["steps/bytes"].bytes_list.value.extend(BYTES)
    ex.features.feature["empty"].SetInParent()
    payload = ex.SerializeToString()
    feats = parse_example(payload, tmp_path / "f", 0)
    assert decode_int64s(feats["steps/ints"], tmp_path, "k", 0).tolist() == INTS
    assert decode_floats(feats["steps/floats"], tmp_path, "k", 0).tolist() == FLOATS
    assert decode_bytes(feats["steps/bytes"], tmp_path, "k", 0) == BYTES
    assert decode_bytes(feats["empty"], tmp_path, "k", 0) == []
    # ... and the fixture's encoder writes what the runtime reads.
    mine = fx.encode_example({"a": ("int64", INTS), "b": ("float", FLOATS), "c": ("bytes", BYTES)}, packed)
    back = Example.FromString(mine).features.feature
    assert list(back["a"].int64_list.value) == INTS
    assert list(back["b"].float_list.value) == FLOATS
    assert list(back["c"].bytes_list.value) == BYTES


def test_find_feature_seeks_to_one_feature(tmp_path: Path) -> None:
    long_key = "steps/" + "k" * 200  # key length needs a 2-byte varint
    value_first = fx.field_len(2, fx.encode_feature("int64", [5, -6])) + fx.field_len(1, b"steps/late")
    entries = b"".join(fx.field_len(1, fx.field_len(1, k.encode()) + fx.field_len(2, fx.encode_feature(*v)))
                       for k, v in {"steps/image": ("bytes", [b"\xff" * 5000]), long_key: ("float", [1.5])}.items())
    payload = fx.field_len(1, entries + fx.field_len(1, value_first))
    for key, expected in ((long_key, [1.5]), ("steps/late", [5, -6]), ("steps/absent", None)):
        fh = io.BytesIO(b"junk" + payload + b"more")
        fh.seek(4)
        found = find_feature(fh, len(payload), key, tmp_path, 0)
        if expected is None:
            assert found is None
        else:
            decode = decode_floats if found.kind == "float" else decode_int64s
            assert decode(found, tmp_path, key, 0).tolist() == expected
        assert fh.tell() <= 4 + len(payload)


def test_malformed_example_names_file_and_record(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.tfrecord: record 3: malformed tf.train.Example \(.*past the end"):
        parse_example(b"\x0a\x10\x0a\x05", tmp_path / "x.tfrecord", 3)


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_is_exact(raw: fx.RldsFixture, converted: Dataset) -> None:
    m = converted.manifest
    assert (m.name, m.embodiment, m.fps, m.num_episodes, m.num_samples) == ("demo_rlds", "demo", 10.0, 4, sum(STEPS))
    assert m.cameras == ["image", "wrist_image"]
    assert m.state_names == ["state_0", "state_1", "state_2", "state_3"]
    assert m.extra["table_entry"] == "generic" and m.extra["language_key"] == "steps/language_instruction"
    episodes = by_episode(converted)
    assert sorted(episodes) == [0, 1, 2, 3]
    for e, samples in episodes.items():
        src, steps = raw.episodes[e], STEPS[e]
        assert [s["meta.json"]["frame_index"] for s in samples] == list(range(steps))
        for t, s in enumerate(samples):
            assert s["meta.json"]["episode"] == f"demo_rlds-train.tfrecord-{e // 2:05d}-of-00002/{e % 2}"
            assert s["meta.json"]["timestamp"] == pytest.approx(t / 10.0)
            np.testing.assert_array_equal(s["state.npy"], src["observation/state"][t])
            idx = np.minimum(np.arange(t, t + 16), steps - 1)
            np.testing.assert_array_equal(s["actions.npy"], src["action"][idx])
            # The is_last step's action is invalid (RLDS), as is everything past the end.
            np.testing.assert_array_equal(s["actions_valid.npy"], np.arange(t, t + 16) < steps - 1)
            assert s["image.jpg"] == src["observation/image"][t]  # JPEG passes through byte for byte
            assert s["wrist_image.jpg"] == src["observation/wrist_image"][t]
            assert s["instruction.txt"] == f"put the block {e} in the bowl"


def test_listing_counts_steps_without_reading_images(raw: fx.RldsFixture) -> None:
    units = list_units(raw.root, opts())
    assert [u.est_samples for u in units] == list(STEPS)
    assert [u.id for u in units][:2] == ["demo_rlds-train.tfrecord-00000-of-00002/0",
                                          "demo_rlds-train.tfrecord-00000-of-00002/1"]


@pytest.mark.parametrize("variant", [{"compress": True}, {"packed": False}])
def test_gzip_and_unpacked_files_give_the_same_shards(variant: dict[str, bool], converted: Dataset,
                                                      tmp_path: Path) -> None:
    other = fx.write_rlds(tmp_path / "src", steps=STEPS, **variant)
    assert (other.files[0].read_bytes()[:2] == b"\x1f\x8b") == bool(variant.get("compress"))
    assert [u.est_samples for u in list_units(other.root, opts())] == list(STEPS)
    convert("rlds", other.root.parent, tmp_path / "out", opts())
    mine = Dataset.open(tmp_path / "out").manifest
    assert [s.sha256 for s in mine.shards] == [s.sha256 for s in converted.manifest.shards]


# ------------------------------------------------------------------------------------------ bad input


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def second_record_offset(path: Path) -> int:
    return 12 + struct.unpack("<Q", path.read_bytes()[:8])[0] + 4


def test_corrupt_payload_crc_names_file_and_record(raw: fx.RldsFixture, tmp_path: Path) -> None:
    root = fresh_copy(raw, tmp_path)
    first = root / raw.files[0].name
    flip(first, second_record_offset(first) + 12 + 200)
    with pytest.raises(DataError) as err:
        convert("rlds", root, tmp_path / "out", opts())
    msg = str(err.value)
    assert msg.startswith(str(first)) and "episode demo_rlds-train.tfrecord-00000-of-00002/1" in msg
    assert "record 1: corrupt payload (payload CRC mismatch)" in msg
    report = convert("rlds", root, tmp_path / "skip", opts(on_bad_episode="skip"))
    assert report.episodes == 3 and len(report.skipped) == 1 and "payload CRC mismatch" in report.skipped[0]


def test_corrupt_length_crc(raw: fx.RldsFixture, tmp_path: Path) -> None:
    root = fresh_copy(raw, tmp_path)
    first = root / raw.files[0].name
    flip(first, second_record_offset(first) + 1)
    with pytest.raises(DataError, match=r"tfrecord-00000-of-00002, episode .*/1: record 1: corrupt record length "
                                         r"\(length CRC mismatch\)"):
        convert("rlds", root, tmp_path / "out", opts())


@pytest.mark.parametrize("cut, problem", [
    (-100, "record 1: truncated record (file ends inside its"),
    (None, "record 1: the file holds 1 records but dataset_info.json lists 2"),
])
def test_truncated_file(raw: fx.RldsFixture, tmp_path: Path, cut: int | None, problem: str) -> None:
    root = fresh_copy(raw, tmp_path)
    last = root / raw.files[1].name
    data = last.read_bytes()
    last.write_bytes(data[:cut] if cut else data[: second_record_offset(last)])
    with pytest.raises(DataError) as err:
        convert("rlds", root, tmp_path / "out", opts())
    assert str(last) in str(err.value) and problem in str(err.value)
    report = convert("rlds", root, tmp_path / "skip", opts(on_bad_episode="skip"))
    assert report.episodes == 3 and report.samples == sum(STEPS[:3])


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    src = fx.write_rlds(tmp_path / "src", compress=True)
    src.files[1].write_bytes(src.files[1].read_bytes()[:-30])
    with pytest.raises(DataError, match=r"tfrecord-00001-of-00002, episode .*/1: record 1: corrupt or truncated gzip "
                                        r"stream \(Compressed file ended"):
        convert("rlds", src.root, tmp_path / "out", opts())


def edit_features(root: Path, key: str, **changes: Any) -> None:
    """Change the tensor/image dict of step feature `key` in features.json."""
    path = root / "features.json"
    doc = json.loads(path.read_text())
    node = doc["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    for part in key.split("/"):
        node = node["featuresDict"]["features"][part]
    leaf = node["tensor"] if "tensor" in node else node["image"]
    leaf.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("key, changes, problem", [
    ("observation/state", {"dtype": "complex64"}, "unknown dtype 'complex64'"),
    ("observation/state", {"encoding": "lz4"}, "unknown tensor encoding 'lz4'"),
    ("observation/image", {"encodingFormat": "webp"}, "unknown image encoding 'webp' (known: jpeg, png)"),
])
def test_unknown_dtype_or_encoding_in_features_json(raw: fx.RldsFixture, tmp_path: Path, key: str,
                                                    changes: dict[str, str], problem: str) -> None:
    root = fresh_copy(raw, tmp_path)
    edit_features(root, key, **changes)
    with pytest.raises(DataError) as err:
        convert("rlds", root, tmp_path / "out", opts())
    assert str(err.value).startswith(f"{root / 'features.json'}, key 'steps/{key}': {problem}")


def test_step_count_mismatch(raw: fx.RldsFixture, tmp_path: Path) -> None:
    root = fresh_copy(raw, tmp_path)
    edit_features(root, "observation/state", shape={"dimensions": ["5"]})
    with pytest.raises(DataError, match=r"record 0: step count mismatch: 'steps/observation/state' holds 36 values, "
                                        r"expected 9 steps x 5 \(steps/is_first has 9\)"):
        convert("rlds", root, tmp_path / "out", opts())


def test_missing_key_in_example(tmp_path: Path) -> None:
    def drop(e: int, ep: dict[str, Any]) -> None:
        if e == 2:
            ep["language_instruction"] = []

    src = fx.write_rlds(tmp_path / "src", mutate=drop)
    with pytest.raises(DataError, match=r"tfrecord-00001-of-00002, episode .*/0, key 'steps/language_instruction': "
                                        r"record 0: step count mismatch"):
        convert("rlds", src.root, tmp_path / "out", opts())
    table = tmp_path / "t.yaml"
    table.write_text("demo_rlds:\n  state: [observation/stat]\n")
    with pytest.raises(DataError, match=r"features.json, key 'steps/observation/stat': state: no feature "
                                        r"'steps/observation/stat' \(did you mean 'steps/observation/state'\?\)"):
        convert("rlds", src.root, tmp_path / "out2", opts(table=str(table)))


def test_nan_names_episode_frame_and_dimension(tmp_path: Path) -> None:
    def plant(e: int, ep: dict[str, Any]) -> None:
        if e == 1:
            ep["observation/state"][5, 2] = np.nan

    src = fx.write_rlds(tmp_path / "src", mutate=plant)
    with pytest.raises(DataError, match=r"episode demo_rlds-train.tfrecord-00000-of-00002/1, frame 5, "
                                        r"key 'steps/observation/state': NaN in steps/observation/state dimension 2"):
        convert("rlds", src.root, tmp_path / "out", opts())


def test_image_that_is_not_an_image(tmp_path: Path) -> None:
    def junk(e: int, ep: dict[str, Any]) -> None:
        if e == 0:
            ep["observation/wrist_image"][3] = b"not an image"

    src = fx.write_rlds(tmp_path / "src", mutate=junk)
    with pytest.raises(DataError, match=r"frame 3, key 'steps/observation/wrist_image': record 0: step 3 of "
                                        r"'steps/observation/wrist_image' is not a JPEG or PNG image \(12 bytes\)"):
        convert("rlds", src.root, tmp_path / "out", opts())



def test_corrupt_jpeg_step_fails_or_is_skipped(tmp_path: Path) -> None:
    def cut(e: int, ep: dict[str, Any]) -> None:
        if e == 1:
            jpeg = ep["observation/image"][5]
            ep["observation/image"][5] = jpeg[: len(jpeg) // 2]  # a JPEG cut short: header fine, data lost

    src = fx.write_rlds(tmp_path / "src", mutate=cut)
    with pytest.raises(DataError) as err:
        convert("rlds", src.root, tmp_path / "out", opts())
    assert str(err.value).startswith(f"{src.files[0]}, episode ")
    assert "frame 5, key 'steps/observation/image': record 1: undecodable image" in str(err.value)
    assert not (tmp_path / "out").exists()
    report = convert("rlds", src.root, tmp_path / "skip", opts(on_bad_episode="skip"))
    assert len(report.skipped) == 1 and report.samples == sum(STEPS) - STEPS[1]


# ---------------------------------------------------------------------------------- table and options


def test_table_override_from_the_command_line(tmp_path: Path) -> None:
    schema = {**fx.basic_schema(), "observation/ticks": fx.Feat("tensor", "int32", (2,)),
              "observation/wrist_image": fx.Feat("image", "uint8", (24, 32, 3), "png")}
    src = fx.write_rlds(tmp_path / "src", schema=schema)
    table = tmp_path / "table.yaml"
    table.write_text(
        "demo_rlds:\n"
        "  embodiment: tabletop_arm\n  fps: 4\n"
        "  state: ['observation/state[1:3]', observation/ticks]\n"
        "  cameras: {observation/wrist_image: gripper cam}\n"
        "  language: ''\n  action_convention: abs_joint\n"
    )
    proc = run_cli("convert", "rlds", str(src.root.parent), str(tmp_path / "out"), "--table", str(table), "--json")
    assert proc.returncode == 0, proc.stderr
    ds = Dataset.open(tmp_path / "out")
    m = ds.manifest
    assert (m.embodiment, m.fps, m.cameras) == ("tabletop_arm", 4.0, ["gripper_cam"])
    assert m.state_names == ["state_1", "state_2", "ticks_0", "ticks_1"]
    assert m.action_names == ["action_0", "action_1", "action_2"]  # not in the entry: generic detection
    extra = m.extra
    assert (extra["table_entry"], extra["action_convention"], extra["language_key"]) == ("demo_rlds", "abs_joint", None)
    first = next(ds.iter_decoded())
    ep = src.episodes[0]
    expected = np.concatenate([ep["observation/state"][0, 1:3], ep["observation/ticks"][0].astype(np.float32)])
    np.testing.assert_array_equal(first["state.npy"], expected)
    assert ep["observation/ticks"].min() < 0  # negative int64 varints made the trip
    assert first["instruction.txt"] == "" and first["gripper_cam.jpg"][:3] == b"\xff\xd8\xff"  # PNG -> JPEG


def test_bad_table_file_is_a_config_error(raw: fx.RldsFixture, tmp_path: Path) -> None:
    table = tmp_path / "t.yaml"
    table.write_text("demo_rlds:\n  fps: -3\n")
    with pytest.raises(ConfigError, match=r"--table .*t.yaml: entry 'demo_rlds' field 'fps': Input should be greater"):
        convert("rlds", raw.root, tmp_path / "out", opts(table=str(table)))
    table.write_text("demo_rlds:\n  state: ['observation/state[1:']\n")
    with pytest.raises(ConfigError, match=r"field 'state': Value error, 'observation/state\[1:' is not KEY or "
                                          r"KEY\[start:stop\]"):
        convert("rlds", raw.root, tmp_path / "out", opts(table=str(table)))


def test_rate_and_embodiment_must_be_known(raw: fx.RldsFixture, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--source-fps is required"):
        convert("rlds", raw.root, tmp_path / "out", opts(source_fps=None))
    with pytest.raises(ConfigError, match="--embodiment is required"):
        convert("rlds", raw.root, tmp_path / "out", opts(embodiment=None))


def test_split_option(tmp_path: Path) -> None:
    fx.write_rlds(tmp_path, steps=(5,))
    val = fx.write_rlds(tmp_path, split="val", files=1, per_file=3, steps=(4, 6, 7), seed=50)
    report = convert("rlds", val.root, tmp_path / "out", opts(split="val"))
    assert (report.episodes, report.samples) == (3, 17)
    ds = Dataset.open(tmp_path / "out")
    files = {s["meta.json"]["episode"].split("/")[0] for s in ds.iter_decoded()}
    assert files == {"demo_rlds-val.tfrecord-00000-of-00001"}
    with pytest.raises(ConfigError, match=r"--split 'test': no .* splits found: train, val"):
        convert("rlds", val.root, tmp_path / "out2", opts(split="test"))


def test_builtin_droid_entry_on_droid_keys(tmp_path: Path) -> None:
    src = fx.write_rlds(tmp_path, name="droid", version="1.0.1", files=1, per_file=2, steps=(6, 8),
                        schema=fx.droid_schema())
    report = convert("rlds", src.root.parent, tmp_path / "out", RldsOptions(shard_size=100))
    assert report.episodes == 2
    ds = Dataset.open(tmp_path / "out")
    m = ds.manifest
    assert (m.embodiment, m.fps, m.extra["action_convention"]) == ("franka", 15.0, "eef_velocity")
    assert m.cameras == ["exterior_1_left", "exterior_2_left", "wrist_left"]
    assert m.state_names == [f"cartesian_position_{i}" for i in range(6)] + ["gripper_position"]
    sample = next(ds.iter_decoded())
    ep = src.episodes[0]
    np.testing.assert_array_equal(sample["state.npy"], np.concatenate(
        [ep["observation/cartesian_position"][0], ep["observation/gripper_position"][0]]).astype(np.float32))
    np.testing.assert_array_equal(sample["actions.npy"][0], np.concatenate(
        [ep["action_dict/cartesian_velocity"][0], ep["action_dict/gripper_position"][0]]).astype(np.float32))
    assert sample["exterior_1_left.jpg"] == ep["observation/exterior_image_1_left"][0]
    second = [s for s in ds.iter_decoded() if s["meta.json"]["frame_index"] == 1][0]
    assert second["meta.json"]["timestamp"] == round(1 / 15, 6)  # the core rounds timestamps to 1 us


def test_shipped_table_has_the_real_oxe_key_names() -> None:
    table = load_table()
    assert table["fractal20220817_data"].state == ["observation/base_pose_tool_reached", "observation/gripper_closed"]
    assert table["fractal20220817_data"].fps == 3 and table["bridge_dataset"].fps == 5
    assert list(table["bridge_dataset"].cameras or {}) == [f"observation/image_{i}" for i in range(4)]
    assert "bridge_data_v2" in table["bridge_dataset"].aliases
    assert table["droid"].state == ["observation/cartesian_position", "observation/gripper_position"]
    assert set(table) >= {"taco_play", "berkeley_autolab_ur5", "jaco_play"}


def test_parallel_workers_write_the_same_shards(raw: fx.RldsFixture, converted: Dataset, tmp_path: Path) -> None:
    convert("rlds", raw.root.parent, tmp_path / "out", opts(), RunOptions(workers=2))
    assert [s.sha256 for s in Dataset.open(tmp_path / "out").manifest.shards] == \
        [s.sha256 for s in converted.manifest.shards]
