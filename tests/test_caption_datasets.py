"""Caption loaders: every format on real files where they exist, and the bad cases."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgcap.captioning.datasets import (
    CaptionSet,
    flickr_id,
    has_splits,
    load_captions,
    merge_caption_sets,
    read_coco,
    read_flickr8k,
    read_flickr30k,
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


def _token_captions(path: Path) -> dict[str, list[str]]:
    """Captions by image name, parsed here independently of the loader."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, caption = line.partition("\t")
        name, _, number = key.rpartition("#")
        if name.endswith(".jpg") and number.isdigit() and caption.strip():
            out.setdefault(name, []).append(caption.strip())
    return out


def _bad_token_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip() and not re.fullmatch(r"\S+\.jpg#\d+\t.*", line))


def test_flickr8k_splits_follow_the_data(flickr8k_dir, lines):
    """Each split is its list's captioned photos present in images/, in list order; the absent
    ones are one line (a split with none present, as test is here, loads empty)."""
    token = flickr8k_dir / "Flickr8k.token.txt"
    captions, present = _token_captions(token), set(os.listdir(flickr8k_dir / "images"))
    for split, list_name in (("train", "Flickr_8k.trainImages.txt"),
                             ("val", "Flickr_8k.devImages.txt"),
                             ("test", "Flickr_8k.testImages.txt")):
        names = list(dict.fromkeys((flickr8k_dir / list_name).read_text().split()))
        expected = [n for n in names if n in captions and n in present]
        absent = [n for n in names if n in captions and n not in present]
        lines.clear()
        data = read_flickr8k(flickr8k_dir, split, report=lines.append)
        assert data.images == expected and len(data.captions) == len(expected)
        assert data.captions == [captions[n] for n in expected]
        assert data.missing == absent
        assert f"{_bad_token_lines(token)} lines skipped" in lines[0]
        assert "2258277193_586949ec62.jpg.1" in lines[0]
        assert lines[1:] == ([f"{flickr8k_dir / list_name}: {len(absent)} of {len(names)} images "
                              f"are not in {flickr8k_dir / 'images'}; skipped "
                              f"(first: {absent[0]})"] if absent else [])


def test_a_split_with_no_photo_present_loads_empty_with_one_line(flickr8k_dir, tmp_path, lines):
    folder = tmp_path / "flickr"
    (folder / "images").mkdir(parents=True)
    shutil.copy(flickr8k_dir / "Flickr8k.token.txt", folder)
    names = list(_token_captions(folder / "Flickr8k.token.txt"))[:4]
    (folder / "Flickr_8k.testImages.txt").write_text("\n".join(names) + "\n")
    data = read_flickr8k(folder, "test", report=lines.append)
    assert (data.images, data.captions, data.missing) == ([], [], names)
    assert lines[1:] == [f"{folder / 'Flickr_8k.testImages.txt'}: 4 of 4 images are not in "
                         f"{folder / 'images'}; skipped (first: {names[0]})"]


def test_missing_images_warn_by_default(flickr8k_dir):
    with pytest.warns(UserWarning, match="images are not in"):
        read_flickr8k(flickr8k_dir, "test")


def test_flickr30k_follows_the_data(flickr30k_dir, lines):
    """Every captioned photo present in images/, in the token file's order, with its captions."""
    token = flickr30k_dir / "captions.token"
    captions, present = _token_captions(token), set(os.listdir(flickr30k_dir / "images"))
    expected = [n for n in captions if n in present]
    absent = [n for n in captions if n not in present]
    data = read_flickr30k(flickr30k_dir, report=lines.append)
    assert data.images == expected and data.missing == absent
    assert data.captions == [captions[n] for n in expected]
    assert sum(map(len, data.captions)) == sum(len(captions[n]) for n in expected)
    assert all(flickr_id(n) == n.removesuffix(".jpg") for n in data.images)
    assert len(lines) == (1 if absent else 0)
    assert all(p.is_file() for p in data.paths()[:20])
    via_name = load_captions("flickr30k", "train", data_dir=flickr30k_dir.parent,
                             report=lines.append)
    assert via_name.images == expected and via_name.image_dir == flickr30k_dir / "images"
    assert not has_splits("flickr30k") and has_splits("flickr8k")
    for split in ("val", "test"):
        with pytest.raises(EcgcapError, match="no val or test split") as err:
            load_captions("flickr30k", split, data_dir=flickr30k_dir)
        assert "\n" not in str(err.value)
    with pytest.raises(EcgcapError, match="unknown split"):
        read_flickr30k(flickr30k_dir, "dev")


def test_flickr30k_reports_a_missing_photo_in_one_line(tmp_path, lines):
    folder = tmp_path / "flickr30k"
    (folder / "images").mkdir(parents=True)
    for name in ("1000268201.jpg", "36979.jpg"):
        (folder / "images" / name).write_bytes(b"")
    (folder / "captions.token").write_text(
        "36979.jpg#0\tA dog .\n1000268201.jpg#0\tA girl .\n99.jpg#0\tGone .\n"
        "36979.jpg#1\tA brown dog.\n99.jpg#1\tGone too .\nno tab\n")
    data = load_captions("flickr30k", data_dir=tmp_path, report=lines.append)
    assert data.images == ["36979.jpg", "1000268201.jpg"] and data.missing == ["99.jpg"]
    assert data.captions == [["A dog .", "A brown dog."], ["A girl ."]]
    token = folder / "captions.token"
    assert lines == [f"{token}: 1 lines skipped (first: line 6 (no tab))",
                     f"{token}: 1 of 3 images are not in {folder / 'images'}; skipped "
                     "(first: 99.jpg)"]
    with pytest.raises(EcgcapError, match="Flickr30k file not found"):
        read_flickr30k(tmp_path)


def test_flickr_id():
    assert flickr_id("1000268201_693b08cb0e.jpg") == "1000268201"
    assert flickr_id("1000268201.jpg") == flickr_id("/x/y/1000268201.JPG") == "1000268201"
    for name in ("airport_1.jpg", "00003.jpg", "000000000009.jpg", "1.tif", "12_x.jpg", "a1.jpg"):
        assert flickr_id(name) is None, name


def test_merge_flickr8k_train_and_flickr30k_counts_each_photo_once(flickr8k_dir, flickr30k_dir):
    f8 = read_flickr8k(flickr8k_dir, "train", report=lambda line: None)
    f30 = read_flickr30k(flickr30k_dir, report=lambda line: None)
    merged = merge_caption_sets([f8, f30])
    ids8 = [n.split("_")[0] for n in f8.images]
    ids30 = [n.split(".")[0] for n in f30.images]
    shared = set(ids8) & set(ids30)
    assert len(merged) == len(set(ids8) | set(ids30)) == len(f8) + len(f30) - len(shared)
    assert sum(map(len, merged.captions)) == sum(map(len, f8.captions + f30.captions))
    assert merged.paths()[:len(f8)] == [Path(os.path.abspath(p)) for p in f8.paths()]
    assert merged.name == "flickr8k-train+flickr30k-train" and merged.missing == f8.missing
    assert all(Path(p).is_absolute() for p in merged.images)
    assert all(p.is_file() for p in merged.paths()[::50])
    if shared:
        one = sorted(shared)[0]
        i8, i30 = ids8.index(one), ids30.index(one)
        assert merged.captions[i8] == f8.captions[i8] + f30.captions[i30]
        assert merged.paths()[i8] == Path(os.path.abspath(f8.paths()[i8]))
    assert len(f8.captions[0]) == 5  # the sources are left as they were


def test_merge_keeps_non_flickr_names_apart_and_the_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        Path(folder).mkdir()
    a = CaptionSet("a", Path("a"), ["airport_1.jpg", "1000268201_693b08cb0e.jpg", "00003.jpg"],
                   [["a1"], ["a2"], ["a3"]], ["gone_a.jpg"])
    b = CaptionSet("b", tmp_path / "b", ["1000268201.jpg", "airport_1.jpg", "5.jpg", "00003.jpg"],
                   [["b1"], ["b2"], ["b3"], ["b4"]], ["gone_b.jpg"])
    same_file = CaptionSet("c", tmp_path / "b" / ".." / "a", ["airport_1.jpg"], [["c1"]])
    merged = merge_caption_sets([a, b, same_file])
    root = tmp_path.resolve()
    assert merged.paths() == [root / "a/airport_1.jpg", root / "a/1000268201_693b08cb0e.jpg",
                              root / "a/00003.jpg", root / "b/airport_1.jpg", root / "b/5.jpg",
                              root / "b/00003.jpg"]
    assert merged.images == [str(p) for p in merged.paths()]
    assert merged.captions == [["a1", "c1"], ["a2", "b1"], ["a3"], ["b2"], ["b3"], ["b4"]]
    assert merged.missing == ["gone_a.jpg", "gone_b.jpg"] and merged.name == "a+b+c"
    assert a.captions == [["a1"], ["a2"], ["a3"]]  # not changed in place
    assert merge_caption_sets([a], name="only").name == "only"
    assert len(merge_caption_sets([])) == 0


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
