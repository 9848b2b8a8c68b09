"""Caption loaders: every format on real files where they exist, and the bad cases."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgcap.captioning.datasets import (
    load_captions,
    read_coco,
    read_flickr8k,
    read_jsonl,
    read_karpathy,
    read_rsicd,
)
from ecgcap.runtime.errors import EcgcapError


@pytest.fixture
def lines():
    got: list[str] = []
    return got


def test_rsicd_splits_as_shipped(rsicd_dir, lines):
    train = read_rsicd(rsicd_dir, "train", report=lines.append)
    val = read_rsicd(rsicd_dir, "val", report=lines.append)
    test = read_rsicd(rsicd_dir, "test", report=lines.append)
    assert (len(train), len(val), len(test)) == (8736, 1092, 593)
    assert lines == []  # every named image is present
    assert all(len(c) == 5 for c in train.captions + val.captions + test.captions)
    assert train.images[0] == "airport_1.jpg"
    assert train.captions[0][0].startswith("Many aircraft are parked")
    assert test.images[0] == "viaduct_322.jpg" and "viaduct" in test.captions[0][0]
    assert not set(train.images) & set(test.images) and not set(val.images) & set(test.images)
    assert all(p.is_file() for p in test.paths()[:20])


def test_flickr8k_reports_missing_images_and_the_bad_id(flickr8k_dir, lines):
    train = read_flickr8k(flickr8k_dir, "train", report=lines.append)
    assert len(train) == 233 and all(len(c) == 5 for c in train.captions)
    assert len(lines) == 2
    assert "5 lines skipped" in lines[0] and "2258277193_586949ec62.jpg.1" in lines[0]
    assert "5767 of 6000 images are not in" in lines[1]
    assert len(read_flickr8k(flickr8k_dir, "val", report=lines.append)) == 21
    assert len(read_flickr8k(flickr8k_dir, "test", report=lines.append)) == 13


def test_missing_images_warn_by_default(flickr8k_dir):
    with pytest.warns(UserWarning, match="images are not in"):
        read_flickr8k(flickr8k_dir, "test")


def _image_dir(rsicd_dir: Path, tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for n in names:
        shutil.copy(rsicd_dir / "images" / n, folder / n)
    return folder


def test_karpathy_json(rsicd_dir, tmp_path, lines):
    images = _image_dir(rsicd_dir, tmp_path, ["airport_1.jpg", "beach_1.jpg", "port_1.jpg"])
    data = {"images": [
        {"filename": "airport_1.jpg", "split": "train",
         "sentences": [{"raw": "Planes at an airport .", "tokens": ["planes"]}]},
        {"filename": "beach_1.jpg", "split": "restval",
         "sentences": [{"tokens": ["a", "beach"]}, {"raw": "   "}]},
        {"filename": "port_1.jpg", "split": "test", "sentences": [{"raw": "boats in a port"}]},
        {"filename": "gone.jpg", "split": "train", "sentences": [{"raw": "x"}]},
    ]}
    path = tmp_path / "dataset_rsicd.json"
    path.write_text(json.dumps(data))
    train = read_karpathy(path, images, "train", report=lines.append)
    assert train.images == ["airport_1.jpg", "beach_1.jpg"]
    assert train.captions == [["Planes at an airport ."], ["a beach"]]
    assert lines == [f"{path}: 1 of 3 images are not in {images}; skipped (first: gone.jpg)"]
    test = load_captions(str(path), "test", report=lines.append)  # dispatch by content
    assert test.captions == [["boats in a port"]]


def test_coco_json_real_and_missing_keys(rsicd_dir, tmp_path):
    val = read_coco(rsicd_dir / "captions_val.json", rsicd_dir / "images")
    assert len(val) == 1092 and val.images[0] == "square_221.jpg"
    bad = tmp_path / "captions_bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(EcgcapError, match=r"images\[0\] has no 'file_name' key"):
        read_coco(bad, rsicd_dir / "images")
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(EcgcapError, match="has no 'annotations' key"):
        read_coco(bad, rsicd_dir / "images")


def test_jsonl_bad_lines_and_non_utf8(rsicd_dir, tmp_path, lines):
    images = _image_dir(rsicd_dir, tmp_path, ["airport_1.jpg", "beach_1.jpg"])
    path = tmp_path / "captions.jsonl"
    path.write_bytes(b'{"filename": "airport_1.jpg", "captions": ["planes", ""]}\n'
                     b'not json\n'
                     b'{"filename": "beach_1.jpg", "captions": ["a caf\xe9"]}\n'
                     b'{"filename": "beach_1.jpg"}\n\n')
    data = read_jsonl(path, images, report=lines.append)
    assert data.images == ["airport_1.jpg"] and data.captions == [["planes"]]
    assert lines == [f'{path}: 3 lines are not {{"filename", "captions"}} JSON objects; '
                     "skipped (first: line 2)"]


def test_flickr_token_file_lines_without_tab_bad_ids_and_empty_captions(flickr8k_dir, tmp_path,
                                                                        lines):
    folder = tmp_path / "flickr"
    shutil.copytree(flickr8k_dir / "images", folder / "images")
    names = sorted(p.name for p in (folder / "images").iterdir())[:3]
    (folder / "Flickr8k.token.txt").write_bytes(
        f"{names[0]}#0\tA dog runs .\n{names[0]}#1 no tab here\n"
        f"{names[1]}.1#0\tbad id\n{names[1]}#0\t   \n{names[2]}#0\tcaf\xe9 ok\n".encode()
        + f"{names[2]}#1\t".encode() + b"\xff\xfe bad bytes\n")
    (folder / "Flickr_8k.trainImages.txt").write_text("\n".join([*names, "missing.jpg"]))
    data = read_flickr8k(folder, "train", report=lines.append)
    assert data.images == [names[0], names[2]]
    assert data.captions == [["A dog runs ."], ["caf\u00e9 ok"]]
    assert lines[0].endswith("3 lines skipped (first: line 2 (no tab))")
    assert "2 images have no usable caption" in lines[1]  # names[1] and missing.jpg
    assert len(lines) == 2


def test_bad_inputs_are_one_clear_error(tmp_path, rsicd_dir):
    with pytest.raises(EcgcapError, match="unknown dataset"):
        load_captions("coco2014")
    with pytest.raises(EcgcapError, match="unknown split"):
        load_captions("rsicd", "dev")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(EcgcapError, match="not valid JSON"):
        load_captions(str(tmp_path / "x.json"))
    (tmp_path / "y.json").write_bytes(b'{"images": "\xff"}')
    with pytest.raises(EcgcapError, match="not UTF-8"):
        load_captions(str(tmp_path / "y.json"))
    with pytest.raises(EcgcapError, match="Flickr8k file not found"):
        read_flickr8k(tmp_path)
    with pytest.raises(EcgcapError, match="image folder not found"):
        read_coco(rsicd_dir / "captions_test.json", tmp_path / "nowhere")


def test_val_holdout_is_stratified_by_scene_and_disjoint(rsicd_dir):
    from ecgcap.captioning.config import CaptionTrainConfig
    from ecgcap.captioning.training import load_splits, scene_of

    train, val = load_splits(CaptionTrainConfig(val_holdout=0.05), data_dir=str(rsicd_dir))
    assert len(train) + len(val) == 8736 + 1092
    assert not set(train.images) & set(val.images)
    held = [f for f in val.images if scene_of(f) not in ("square", "stadium", "storagetanks",
                                                         "viaduct")]
    scenes = {scene_of(f) for f in held}
    assert len(held) >= 400 and len(scenes) == 26  # every training-only scene is represented
    plain_train, plain_val = load_splits(CaptionTrainConfig(val_holdout=0), data_dir=str(rsicd_dir))
    assert (len(plain_train), len(plain_val)) == (8736, 1092)


def test_a_single_coco_or_jsonl_file_is_one_split_never_its_own_val(rsicd_dir, tmp_path):
    from ecgcap.captioning.config import CaptionTrainConfig
    from ecgcap.captioning.datasets import has_splits
    from ecgcap.captioning.training import load_splits

    coco, jsonl = str(rsicd_dir / "captions_val.json"), str(rsicd_dir / "captions_train.jsonl")
    karpathy = tmp_path / "dataset_x.json"
    karpathy.write_text(json.dumps({"images": []}))
    assert has_splits("rsicd") and has_splits(str(karpathy))
    assert not has_splits(coco) and not has_splits(jsonl)
    images = str(rsicd_dir / "images")
    train, val = load_splits(CaptionTrainConfig(dataset=coco, val_holdout=0.1),
                             image_dir=images)
    assert (len(train), len(val)) == (982, 110)  # the file's 1,092 images, 10% held out
    assert not set(train.images) & set(val.images)
    with pytest.raises(EcgcapError, match="one split; val comes from --val-holdout"):
        load_splits(CaptionTrainConfig(dataset=jsonl, val_holdout=0), image_dir=images)


_VALID_FLICKR = st.builds(lambda k, c: f"a.jpg#{k}\t{c}".encode(), st.integers(0, 9),
                          st.text(alphabet="abc xyz", min_size=1, max_size=20))
_VALID_JSONL = st.builds(lambda c: json.dumps({"filename": "a.jpg", "captions": c}).encode(),
                         st.lists(st.text(max_size=15), max_size=3))


def _check_parsed(data, valid_captions: int) -> None:
    for caps in data.captions:
        assert caps and all(isinstance(c, str) and c == c.strip() and c for c in caps)
    kept = sum(len(c) for f, c in zip(data.images, data.captions, strict=True) if f == "a.jpg")
    assert kept >= valid_captions  # random lines may add captions, never remove valid ones


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(st.binary(max_size=40), _VALID_FLICKR), max_size=12),
       split=st.lists(st.one_of(st.binary(max_size=12), st.just(b"a.jpg")), max_size=4))
def test_flickr8k_parser_survives_any_bytes(lines, split):
    """Any token file and split list: the result or one EcgcapError, never another error;
    every kept caption is clean text; no well-formed caption line is lost."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        (folder / "images" / "a.jpg").write_bytes(b"")
        (folder / "Flickr8k.token.txt").write_bytes(b"\n".join(lines))
        (folder / "Flickr_8k.trainImages.txt").write_bytes(b"\n".join([*split, b"a.jpg"]))
        reports: list[str] = []
        try:
            data = read_flickr8k(folder, "train", report=reports.append)
        except EcgcapError:
            return
        valid = sum(1 for raw in lines if re.fullmatch(rb"a\.jpg#\d\t *[abcxyz][abc xyz]*", raw))
        _check_parsed(data, valid)
        assert all("\n" not in r for r in reports)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(st.binary(max_size=40), _VALID_JSONL), max_size=12))
def test_jsonl_parser_survives_any_bytes(lines):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        (folder / "images" / "a.jpg").write_bytes(b"")
        (folder / "captions.jsonl").write_bytes(b"\n".join(lines))
        reports: list[str] = []
        try:
            data = read_jsonl(folder / "captions.jsonl", folder / "images",
                              report=reports.append)
        except EcgcapError:
            return
        valid = sum(sum(1 for c in json.loads(raw)["captions"] if c.strip())
                    for raw in lines if raw.startswith(b'{"filename": "a.jpg"'))
        _check_parsed(data, valid)
        assert all("\n" not in r for r in reports)
