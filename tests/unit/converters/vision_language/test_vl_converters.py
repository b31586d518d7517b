"""The vision-language converters (coco, img2dataset, hf-parquet) on sources written with the real
libraries: exact texts and conversations, image pixels, order, options, skipped records, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RunOptions
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import decode_image, is_jpeg
from cotrain_converters.vision_language import hf_parquet, img2dataset
from cotrain_converters.vision_language.coco import CocoOptions
from cotrain_converters.vision_language.hf_parquet import HFParquetOptions
from cotrain_converters.vision_language.img2dataset import Img2DatasetOptions
from tests.fixtures.vl import (
    COCO_IDS,
    COCO_PNG,
    CONVERSATIONS,
    CocoFixture,
    WdsRecord,
    encode,
    picture,
    write_coco,
    write_hf_captions,
    write_hf_conversations,
    write_hf_multi_image,
    write_img2dataset,
)
from tests.helpers import run_cli, tree_digest


def _samples(out: Path) -> list[dict[str, Any]]:
    return list(Dataset.open(out).iter_decoded())


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def _assert_close(jpeg: bytes, pixels: np.ndarray) -> None:
    """JPEG at quality 90 of a smooth 32-pixel image stays within a few levels of the source."""
    assert is_jpeg(jpeg)
    decoded = decode_image(jpeg).astype(np.int16)
    assert decoded.shape == pixels.shape
    assert np.abs(decoded - pixels.astype(np.int16)).mean() < 3.0


def _content(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if not k.startswith("__")} for s in samples]


# ---------------------------------------------------------------- coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> CocoFixture:
    return write_coco(tmp_path_factory.mktemp("coco") / "coco")


def test_coco_first_caption_per_image_in_image_id_order(coco: CocoFixture, tmp_path: Path) -> None:
    convert("coco", coco.root, tmp_path / "out", CocoOptions())
    samples = _samples(tmp_path / "out")
    assert [s["meta.json"]["image_id"] for s in samples] == sorted(COCO_IDS)
    for s in samples:
        image_id = s["meta.json"]["image_id"]
        caption_id, caption = min(coco.captions[image_id])  # lowest annotation id, written last
        assert s["target.txt"] == caption.strip() and s["prompt.txt"] == "caption en"
        height, width = coco.images[image_id].shape[:2]
        assert s["meta.json"] == {"dataset": "coco", "modality": "vision_language", "source_id": str(image_id),
                                  "image_id": image_id, "caption_id": caption_id,
                                  "file_name": coco.files[image_id].name, "width": width, "height": height}
        assert sorted(k for k in s if not k.startswith("__")) == ["image.jpg", "meta.json", "prompt.txt", "target.txt"]
    man = _manifest(tmp_path / "out")
    assert (man["modality"], man["cameras"], man["num_samples"], man["num_episodes"]) == \
           ("vision_language", ["image"], 5, 0)
    assert man["stats"] == {"state": None, "actions": None}
    assert man["extra"] == {"annotation_file": "captions_val2017.json", "source_images": 5}


def test_coco_jpeg_passes_through_and_png_becomes_jpeg(coco: CocoFixture, tmp_path: Path) -> None:
    convert("coco", coco.root, tmp_path / "out", CocoOptions())
    for s in _samples(tmp_path / "out"):
        image_id = s["meta.json"]["image_id"]
        if image_id in COCO_PNG:
            assert coco.files[image_id].read_bytes()[:4] == b"\x89PNG"
            _assert_close(s["image.jpg"], coco.images[image_id])
        else:  # already JPEG and no resize asked: the source bytes, untouched
            assert s["image.jpg"] == coco.files[image_id].read_bytes()
            _assert_close(s["image.jpg"], coco.images[image_id])


def test_coco_all_captions_gives_one_sample_per_caption(coco: CocoFixture, tmp_path: Path) -> None:
    convert("coco", coco.root, tmp_path / "out", CocoOptions(captions="all"))
    samples = _samples(tmp_path / "out")
    assert len(samples) == 15
    expected = [(i, a, c.strip()) for i in sorted(COCO_IDS) for a, c in sorted(coco.captions[i])]
    assert [(s["meta.json"]["image_id"], s["meta.json"]["caption_id"], s["target.txt"]) for s in samples] == expected
    assert "Caption 1 of image 42, a scene number 4." in [s["target.txt"] for s in samples]  # " \n" stripped
    by_image = {}
    for s in samples:
        by_image.setdefault(s["meta.json"]["image_id"], set()).add(s["image.jpg"])
    assert all(len(images) == 1 for images in by_image.values())


def test_coco_resize_bound_keeps_aspect_ratio(coco: CocoFixture, tmp_path: Path) -> None:
    convert("coco", coco.root, tmp_path / "out", CocoOptions(image_size="16"))
    sizes = {}
    for s in _samples(tmp_path / "out"):
        decoded = decode_image(s["image.jpg"])
        meta = s["meta.json"]
        assert (meta["height"], meta["width"]) == decoded.shape[:2]
        sizes[meta["image_id"]] = decoded.shape[:2]
    assert sizes == {42: (16, 16), 139: (16, 16), 285: (16, 16), 632: (16, 16), 724: (11, 16)}  # 724 is 32x48
    assert _manifest(tmp_path / "out")["image_size"] == [16, 16]


def test_coco_missing_image_fails_before_writing(tmp_path: Path) -> None:
    fx = write_coco(tmp_path / "coco", missing=(285,))
    with pytest.raises(DataError) as err:
        convert("coco", fx.root, tmp_path / "out", CocoOptions())
    assert str(err.value) == f"{fx.files[285]}, episode image 285: image file not found"
    assert not (tmp_path / "out").exists()


def test_coco_missing_image_skipped_alone_and_listed(tmp_path: Path) -> None:
    fx = write_coco(tmp_path / "coco", missing=(285,))
    report = convert("coco", fx.root, tmp_path / "out", CocoOptions(on_bad_episode="skip"))
    assert report.skipped == [f"{fx.files[285]}, episode image 285: image file not found"]
    assert [s["meta.json"]["image_id"] for s in _samples(tmp_path / "out")] == [42, 139, 632, 724]
    man = _manifest(tmp_path / "out")
    assert man["skipped_episodes"] == [{"episode": "image 285", "reason": report.skipped[0]}]
    assert man["num_samples"] == 4


def test_coco_annotation_file_choice_and_bad_files(coco: CocoFixture, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco.root, root)
    shutil.copy(root / "annotations" / "captions_val2017.json", root / "annotations" / "captions_train2017.json")
    with pytest.raises(DataError, match=r"expected exactly one captions_\*\.json, found captions_train2017.json, "
                                        r"captions_val2017.json; choose one with --annotations"):
        convert("coco", root, tmp_path / "out", CocoOptions())
    # train2017/ does not exist: the folder is named after the split unless --images says otherwise
    with pytest.raises(DataError, match=r"image folder not found \(tried .*train2017, .*images\)"):
        convert("coco", root, tmp_path / "out", CocoOptions(annotations="annotations/captions_train2017.json"))
    report = convert("coco", root, tmp_path / "out", CocoOptions(annotations="annotations/captions_train2017.json",
                                                                  images="val2017"))
    assert report.samples == 5
    instances = json.loads((root / "annotations" / "captions_val2017.json").read_text())
    for ann in instances["annotations"]:
        ann.pop("caption")
        ann["bbox"] = [0, 0, 4, 4]
    (root / "instances_val2017.json").write_text(json.dumps(instances))
    with pytest.raises(DataError, match=r"episode annotation 893, key 'caption': annotation has no 'caption' "
                                        r"\(instances_\* and person_keypoints_\* files have none"):
        convert("coco", root / "instances_val2017.json", tmp_path / "out2", CocoOptions(images="val2017"))


def test_coco_cli_options(coco: CocoFixture, tmp_path: Path) -> None:
    run_cli("convert", "coco", str(coco.root), str(tmp_path / "out"), "--captions", "all", "--image-size", "8",
            "--prompt", "describe", check=True)
    samples = _samples(tmp_path / "out")
    assert len(samples) == 15 and {s["prompt.txt"] for s in samples} == {"describe"}
    assert max(decode_image(s["image.jpg"]).shape[1] for s in samples) == 8
    bad = run_cli("convert", "coco", str(coco.root), str(tmp_path / "out2"), "--captions", "some")
    assert bad.returncode == 1 and "--captions 'some'" in bad.stderr


# ---------------------------------------------------------------- img2dataset


@pytest.fixture(scope="module")
def wds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[WdsRecord]]:
    root = tmp_path_factory.mktemp("wds") / "laion"
    return root, write_img2dataset(root)


def test_img2dataset_captions_keys_and_left_out_records(wds: tuple[Path, list[WdsRecord]], tmp_path: Path) -> None:
    root, records = wds
    convert("img2dataset", root, tmp_path / "out", Img2DatasetOptions())
    samples = _samples(tmp_path / "out")
    kept = [r for r in records if r.kept]
    assert [s["meta.json"]["key"] for s in samples] == [r.key for r in kept]
    for s, r in zip(samples, kept):
        assert s["target.txt"] == r.caption and s["prompt.txt"] == "caption en"
        assert s["image.jpg"] == r.image  # JPEG without resize: passed through
        assert s["meta.json"] == {"dataset": "laion", "modality": "vision_language", "source_id": r.key, "key": r.key,
                                  "shard": r.shard, "url": f"https://example.com/img/{r.key}.jpg",
                                  "width": 32, "height": 32}
    man = _manifest(tmp_path / "out")
    assert man["num_samples"] == 9 and man["num_episodes"] == 0
    assert man["extra"] == {"records_left_out": {"no caption": 1, "no image": 1, "status failed_to_download": 1},
                            "source_tars": 2}


def test_img2dataset_small_units_read_exact_byte_ranges(wds: tuple[Path, list[WdsRecord]], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = wds
    convert("img2dataset", root, tmp_path / "whole", Img2DatasetOptions())
    monkeypatch.setattr(img2dataset, "RECORDS_PER_UNIT", 2)
    units = img2dataset.list_units(root, Img2DatasetOptions())
    # shard 0 keeps 3 records (2 + 1), shard 1 keeps 6 (2 + 2 + 2); units never span two tars
    assert [(u.ref["tar"], u.est_samples) for u in units] == [("00000.tar", 2), ("00000.tar", 1)] + \
           [("00001.tar", 2)] * 3
    assert units[0].id == "00000.tar keys 000000000..000000002"  # the failed 000000001 lies inside the range
    convert("img2dataset", root, tmp_path / "units", Img2DatasetOptions(), RunOptions(workers=2))
    assert _content(_samples(tmp_path / "units")) == _content(_samples(tmp_path / "whole"))
    assert _manifest(tmp_path / "units")["extra"] == _manifest(tmp_path / "whole")["extra"]


def test_img2dataset_truncated_tar_is_a_data_error(wds: tuple[Path, list[WdsRecord]], tmp_path: Path) -> None:
    root, _ = wds
    copy = tmp_path / "laion"
    shutil.copytree(root, copy)
    data = (copy / "00001.tar").read_bytes()
    (copy / "00001.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"00001\.tar, episode key 000010001: truncated tar: member at byte \d+ needs"):
        convert("img2dataset", copy, tmp_path / "out", Img2DatasetOptions())


def test_img2dataset_png_images_and_resize(tmp_path: Path) -> None:
    from webdataset import TarWriter

    (tmp_path / "src").mkdir()
    with TarWriter(str(tmp_path / "src" / "00000.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"00000{i:04d}", "png": encode(picture(i, (32, 64)), "PNG"), "txt": f"png {i}",
                        "json": json.dumps({"key": f"00000{i:04d}", "status": "success"})})
    convert("img2dataset", tmp_path / "src", tmp_path / "out", Img2DatasetOptions(image_size="16"))
    samples = _samples(tmp_path / "out")
    assert [s["target.txt"] for s in samples] == ["png 0", "png 1", "png 2"]
    for _i, s in enumerate(samples):
        assert is_jpeg(s["image.jpg"]) and decode_image(s["image.jpg"]).shape == (8, 16, 3)
        assert (s["meta.json"]["width"], s["meta.json"]["height"], s["meta.json"]["url"]) == (16, 8, None)


def test_img2dataset_undecodable_image_names_the_key(tmp_path: Path) -> None:
    from webdataset import TarWriter

    (tmp_path / "src").mkdir()
    with TarWriter(str(tmp_path / "src" / "00000.tar")) as sink:
        sink.write({"__key__": "000000000", "jpg": encode(picture(0), "JPEG"), "txt": "fine"})
        sink.write({"__key__": "000000001", "jpg": b"<html>404</html>", "txt": "an error page saved as jpg"})
    with pytest.raises(DataError) as err:
        convert("img2dataset", tmp_path / "src", tmp_path / "out", Img2DatasetOptions())
    assert str(err.value).startswith(f"{tmp_path / 'src' / '00000.tar'}, episode key 000000001, key 'jpg': "
                                     "undecodable image (16 bytes): cannot identify image file")
    report = convert("img2dataset", tmp_path / "src", tmp_path / "out", Img2DatasetOptions(on_bad_episode="skip"))
    assert report.samples == 0 and len(report.skipped) == 1  # the whole unit (both records) is skipped


# ---------------------------------------------------------------- hf-parquet


@pytest.fixture(scope="module")
def hf_captions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("hf") / "captions"
    return root, write_hf_captions(root)


def test_hf_parquet_captions_across_files(hf_captions: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root, expected = hf_captions
    assert pq.ParquetFile(root / expected[0]["file"]).metadata.num_row_groups == 3  # rows 2 + 2 + 1
    convert("hf-parquet", root, tmp_path / "out", HFParquetOptions())
    samples = _samples(tmp_path / "out")
    assert len(samples) == 10
    for s, e in zip(samples, expected):
        assert (s["target.txt"], s["prompt.txt"]) == (e["text"], "caption en")
        assert s["meta.json"] == {"dataset": "captions", "modality": "vision_language", "source_id": e["id"],
                                  "file": e["file"], "row": e["row"], "width": 32, "height": 32}
        _assert_close(s["image.jpg"], e["pixels"])  # datasets stored PNG; converted to JPEG
    man = _manifest(tmp_path / "out")
    assert man["extra"] == {"columns": {"image": "image", "text": "caption", "id": "id"}, "source_files": 2}
    assert man["cameras"] == ["image"] and man["num_episodes"] == 0


def test_hf_parquet_units_follow_row_groups(hf_captions: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = hf_captions
    convert("hf-parquet", root, tmp_path / "whole", HFParquetOptions())
    monkeypatch.setattr(hf_parquet, "RECORDS_PER_UNIT", 3)
    units = hf_parquet.list_units(root, HFParquetOptions())
    assert [(u.ref["file"][:11], u.ref["row_groups"], u.ref["first_row"]) for u in units] == [
        ("train-00000", [0, 1], 0), ("train-00000", [2], 4), ("train-00001", [0, 1], 0), ("train-00001", [2], 4)]
    convert("hf-parquet", root, tmp_path / "units", HFParquetOptions())
    assert _content(_samples(tmp_path / "units")) == _content(_samples(tmp_path / "whole"))


def test_hf_parquet_caption_lists_first_or_all(tmp_path: Path) -> None:
    expected = write_hf_captions(tmp_path / "src", files=1, rows=3, caption_lists=True)
    convert("hf-parquet", tmp_path / "src", tmp_path / "first", HFParquetOptions())
    assert [s["target.txt"] for s in _samples(tmp_path / "first")] == [e["text"][0] for e in expected]
    convert("hf-parquet", tmp_path / "src", tmp_path / "all", HFParquetOptions(captions="all"))
    assert [s["target.txt"] for s in _samples(tmp_path / "all")] == [t.strip() for e in expected for t in e["text"]]


def test_hf_parquet_llava_conversations(tmp_path: Path) -> None:
    write_hf_conversations(tmp_path / "llava")
    convert("hf-parquet", tmp_path / "llava", tmp_path / "out", HFParquetOptions())
    samples = _samples(tmp_path / "out")
    assert [s["conversation.json"] for s in samples] == [
        [{"role": "user", "content": "What colour dominates the picture?"}, {"role": "assistant", "content": "Red."}],
        [{"role": "user", "content": "How many objects are there?"}, {"role": "assistant", "content": "Two."},
         {"role": "user", "content": "Which one is larger?"}, {"role": "assistant", "content": "The left one."}],
        [{"role": "user", "content": "Describe the scene."}, {"role": "assistant", "content": "A smooth gradient."}],
    ]
    assert len(samples) == len(CONVERSATIONS)
    assert [s["meta.json"]["source_id"] for s in samples] == ["llava-0", "llava-1", "llava-2"]
    assert all("prompt.txt" not in s and "target.txt" not in s for s in samples)
    assert _manifest(tmp_path / "out")["extra"]["columns"] == {"image": "image", "conversations": "conversations",
                                                                "id": "id"}


def test_hf_parquet_chat_roles_and_bad_roles(tmp_path: Path) -> None:
    chat = [[{"role": "user", "content": "Is it <image> blue?"}, {"role": "assistant", "content": " No. "}]]
    write_hf_conversations(tmp_path / "chat", chat)
    convert("hf-parquet", tmp_path / "chat", tmp_path / "out", HFParquetOptions())
    assert _samples(tmp_path / "out")[0]["conversation.json"] == [{"role": "user", "content": "Is it  blue?"},
                                                                  {"role": "assistant", "content": "No."}]
    write_hf_conversations(tmp_path / "sys", [[{"from": "system", "value": "Be brief."},
                                               {"from": "gpt", "value": "Ok."}]])
    with pytest.raises(DataError, match=r"train\.parquet, episode row 0, key 'conversations': turn 0 has role "
                                        r"'system'; known roles: human, user, gpt, assistant"):
        convert("hf-parquet", tmp_path / "sys", tmp_path / "out2", HFParquetOptions())
    write_hf_conversations(tmp_path / "open", [[{"from": "human", "value": "<image>\nAnd?"}]])
    with pytest.raises(DataError, match="conversation ends with a user turn"):
        convert("hf-parquet", tmp_path / "open", tmp_path / "out3", HFParquetOptions())


def test_hf_parquet_image_lists_and_question_answer_columns(tmp_path: Path) -> None:
    write_hf_multi_image(tmp_path / "vqa", counts=(2, 1, 3))
    convert("hf-parquet", tmp_path / "vqa", tmp_path / "out",
            HFParquetOptions(prompt_column="question", text_column="answer"))
    samples = _samples(tmp_path / "out")
    assert [sorted(k for k in s if k.endswith(".jpg")) for s in samples] == [
        ["image_0.jpg", "image_1.jpg"], ["image_0.jpg"], ["image_0.jpg", "image_1.jpg", "image_2.jpg"]]
    assert [(s["prompt.txt"], s["target.txt"]) for s in samples] == [
        ("Are the 2 images alike?", "answer 0"), ("Are the 1 images alike?", "answer 1"),
        ("Are the 3 images alike?", "answer 2")]
    _assert_close(samples[2]["image_1.jpg"], picture(700 + 20 + 1))
    assert samples[0]["meta.json"]["image_sizes"] == [[32, 32], [32, 32]]
    assert _manifest(tmp_path / "out")["cameras"] == ["image_0", "image_1", "image_2"]


def test_hf_parquet_unknown_or_missing_columns(hf_captions: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    root, expected = hf_captions
    with pytest.raises(DataError) as err:
        convert("hf-parquet", root, tmp_path / "out", HFParquetOptions(text_column="captoin"))
    assert str(err.value) == (f"{root / expected[0]['file']}, key 'captoin': --text-column: no column 'captoin' "
                              "(did you mean 'caption'?); columns: image, caption, id")
    with pytest.raises(DataError, match="--image-column: column 'caption' is string, not an image"):
        convert("hf-parquet", root, tmp_path / "out", HFParquetOptions(image_column="caption"))
    with pytest.raises(ConfigError, match="--conversations-column excludes --text-column"):
        convert("hf-parquet", root, tmp_path / "out", HFParquetOptions(conversations_column="c", text_column="t"))
    write_hf_multi_image(tmp_path / "vqa")
    with pytest.raises(DataError, match=r"no text column found \(tried caption, .*\); choose one with --text-column "
                                        r"or --conversations-column; columns: images, question, answer"):
        convert("hf-parquet", tmp_path / "vqa", tmp_path / "out", HFParquetOptions())


def test_hf_parquet_images_by_path(tmp_path: Path) -> None:
    import datasets

    (tmp_path / "src" / "img").mkdir(parents=True)
    files = []
    for i in range(2):
        files.append(tmp_path / "src" / "img" / f"{i}.png")
        files[-1].write_bytes(encode(picture(i), "PNG"))
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [str(f) for f in files], "text": ["zero", "one"]}, features=features)
    ds.to_parquet(str(tmp_path / "src" / "local.parquet"))  # to_parquet keeps paths, embeds no bytes
    convert("hf-parquet", tmp_path / "src", tmp_path / "out", HFParquetOptions())
    samples = _samples(tmp_path / "out")
    assert [s["target.txt"] for s in samples] == ["zero", "one"]
    _assert_close(samples[1]["image.jpg"], picture(1))
    files[1].unlink()
    with pytest.raises(DataError, match=rf"episode row 1, key 'image': image has no embedded bytes and its path "
                                        rf"'{files[1]}' is not a file"):
        convert("hf-parquet", tmp_path / "src", tmp_path / "out2", HFParquetOptions())


# ---------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ["coco", "img2dataset", "hf-parquet"])
def test_conversion_is_deterministic(name: str, coco: CocoFixture, wds: tuple[Path, list[WdsRecord]],
                                     hf_captions: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    src, options = {
        "coco": (coco.root, CocoOptions(captions="all", image_size="24")),
        "img2dataset": (wds[0], Img2DatasetOptions(image_size="24", jpeg_quality=80)),
        "hf-parquet": (hf_captions[0], HFParquetOptions(shard_size=4)),
    }[name]
    convert(name, src, tmp_path / "a", options)
    convert(name, src, tmp_path / "b", options)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert len(_manifest(tmp_path / "a")["shards"]) >= 1


# ---------------------------------------------------------------- what real producers write (issue 18)


def _nine_records(root: Path) -> Path:
    """One img2dataset tar of 9 records written with webdataset's TarWriter (as img2dataset does)."""
    from webdataset import TarWriter

    root.mkdir(parents=True)
    with TarWriter(str(root / "00000.tar")) as sink:
        for i in range(9):
            key = f"00000{i:04d}"
            sink.write({"__key__": key, "jpg": encode(picture(i), "JPEG"), "txt": f"caption {i}",
                        "json": json.dumps({"key": key, "status": "success", "caption": f"caption {i}"})})
    return root / "00000.tar"


def _member_ends(tar_path: Path) -> list[tuple[str, int]]:
    """(member name, byte where its padded data ends), read with tarfile."""
    import tarfile

    with tarfile.open(tar_path) as tar:
        return [(m.name, m.offset_data + -(-m.size // 512) * 512) for m in tar.getmembers()]


@pytest.mark.parametrize("cut", ["record boundary", "between members", "inside image"])
def test_img2dataset_truncated_tar_never_drops_records_silently(tmp_path: Path, cut: str) -> None:
    tar = _nine_records(tmp_path / "src")
    ends = dict(_member_ends(tar))
    data = tar.read_bytes()
    size = {"record boundary": ends["000000006.txt"],  # 7 whole records, as in issue 18
            "between members": ends["000000006.jpg"],  # record 6 keeps its image, loses json and txt
            "inside image": ends["000000006.jpg"] - 700}[cut]
    tar.write_bytes(data[:size])
    with pytest.raises(DataError) as err:
        convert("img2dataset", tmp_path / "src", tmp_path / "out", Img2DatasetOptions())
    assert str(err.value).startswith(f"{tar}, episode key 00000000") and "truncated" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    report = convert("img2dataset", tmp_path / "src", tmp_path / "skip", Img2DatasetOptions(on_bad_episode="skip"))
    kept = [s["meta.json"]["key"] for s in _samples(tmp_path / "skip")]
    assert kept == [f"00000{i:04d}" for i in range(len(kept))] and len(kept) <= 6
    assert len(report.skipped) == 1 and "truncated" in report.skipped[0]
    assert _manifest(tmp_path / "skip")["skipped_episodes"][0]["episode"].startswith("00000.tar damaged after key")


def test_img2dataset_corrupt_jpeg_in_whole_tar(tmp_path: Path) -> None:
    from webdataset import TarWriter

    (tmp_path / "src").mkdir()
    good = encode(picture(0), "JPEG")
    with TarWriter(str(tmp_path / "src" / "00000.tar")) as sink:
        sink.write({"__key__": "000000000", "jpg": good, "txt": "fine"})
        sink.write({"__key__": "000000001", "jpg": good[: len(good) - 300], "txt": "cut short"})
    with pytest.raises(DataError, match=r"00000\.tar, episode key 000000001, key 'jpg': undecodable image "
                                        r"\(\d+ bytes\): (image file is truncated|Truncated File Read)"):
        convert("img2dataset", tmp_path / "src", tmp_path / "out", Img2DatasetOptions())


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_hf_parquet_image_paths_stay_inside_the_source(tmp_path: Path, where: str) -> None:
    import datasets

    secret = tmp_path / "outside.png"
    secret.write_bytes(encode(picture(9), "PNG"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "link.png").symlink_to(secret)
    ref = {"dotdot": "../outside.png", "absolute": str(secret), "symlink": "link.png"}[where]
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [str(secret)], "text": ["leak"]}, features=features)
    ds.to_parquet(str(tmp_path / "src" / "data.parquet"))  # HF keeps the absolute path, embeds no bytes
    table = pq.read_table(tmp_path / "src" / "data.parquet")
    assert table.column("image").to_pylist() == [{"bytes": None, "path": str(secret)}]
    image = pa.array([{"bytes": None, "path": ref}], table.schema.field("image").type)
    pq.write_table(table.set_column(0, table.schema.field("image"), image), tmp_path / "src" / "data.parquet")
    with pytest.raises(DataError, match=r"data\.parquet, episode row 0, key 'image': image path .* outside the "
                                        r"dataset folder"):
        convert("hf-parquet", tmp_path / "src", tmp_path / "out", HFParquetOptions())
    assert not (tmp_path / "out").exists()
