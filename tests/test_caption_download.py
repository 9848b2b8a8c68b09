"""Flickr8k download against local archives laid out like the public mirror's: checksums,
safe unpacking, resume, the offline message, and the data-location rules; Flickr30k, which has
no public download: the message saying where to get it, and the layout it names."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ecgcap.captioning.datasets import load_captions, read_flickr8k
from ecgcap.captioning.download import FLICKR30K_FORM, download_flickr8k, flickr8k_place
from ecgcap.runtime.download import extract_zip
from ecgcap.runtime.errors import EcgcapError

IMAGES = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture()
def mirror(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder with the two archives, as the mirror serves them, and their MD5s."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    with zipfile.ZipFile(folder / "Flickr8k_text.zip", "w") as z:
        z.writestr("Flickr8k.token.txt", "".join(
            f"{name}#{k}\ta red square number {k} .\n" for name in IMAGES for k in range(5)))
        z.writestr("Flickr_8k.trainImages.txt", IMAGES[0] + "\n")
        z.writestr("Flickr_8k.devImages.txt", IMAGES[1] + "\n")
        z.writestr("Flickr_8k.testImages.txt", "")
        z.writestr("__MACOSX/._Flickr8k.token.txt", "junk")
    with zipfile.ZipFile(folder / "Flickr8k_Dataset.zip", "w") as z:
        for name in IMAGES:
            z.writestr(f"Flicker8k_Dataset/{name}", _jpeg())
        z.writestr(f"__MACOSX/Flicker8k_Dataset/._{IMAGES[0]}", "junk")
    sums = {n: hashlib.md5((folder / n).read_bytes()).hexdigest()  # noqa: S324 - as published
            for n in ("Flickr8k_text.zip", "Flickr8k_Dataset.zip")}
    return folder, sums


def test_download_unpacks_into_the_layout_the_reader_wants(mirror, tmp_path):
    folder, sums = mirror
    dest = download_flickr8k(tmp_path / "flickr8k", base_url=folder.as_uri(), archives=sums,
                             quiet=True)
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(IMAGES)
    train = read_flickr8k(dest, "train", report=lambda line: None)
    assert train.images == [IMAGES[0]] and len(train.captions[0]) == 5
    assert not list(dest.glob("*.zip")) and not list(dest.rglob("._*"))
    assert not [p for p in dest.rglob("*") if ".tmp" in p.name]

    # a second run fetches and unpacks nothing, even with the mirror gone
    again = download_flickr8k(dest, base_url=(tmp_path / "gone").as_uri(), archives=sums,
                              quiet=True)
    assert again == dest


def test_checksum_mismatch_keeps_nothing(mirror, tmp_path):
    folder, sums = mirror
    wrong = {**sums, "Flickr8k_text.zip": "0" * 32}
    with pytest.raises(EcgcapError, match="checksum mismatch for Flickr8k_text.zip") as err:
        download_flickr8k(tmp_path / "f", base_url=folder.as_uri(), archives=wrong, quiet=True)
    assert err.value.exit_code == 1  # a bad download, not bad usage
    assert not list((tmp_path / "f").iterdir())


def test_offline_names_data_dir(tmp_path):
    with pytest.raises(EcgcapError, match="--data-dir") as info:
        download_flickr8k(tmp_path / "f", base_url="http://127.0.0.1:9", quiet=True,
                          timeout=5)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_archives_cannot_write_outside_their_folder(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.txt", "ok")
        z.writestr(member, "evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(EcgcapError, match="refusing") as err:
        extract_zip(archive, dest)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)  # an unsafe download
    assert not list(dest.iterdir())  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists()


def test_links_in_archives_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("images/x.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(EcgcapError, match="refusing link"):
        extract_zip(archive, tmp_path / "dest", flickr8k_place)
    assert not (tmp_path / "dest").exists() or not list((tmp_path / "dest").rglob("*"))
    assert flickr8k_place("__MACOSX/Flicker8k_Dataset/._a.jpg") is None
    assert flickr8k_place("Flicker8k_Dataset/a.jpg") == "images/a.jpg"


def test_train_caption_offline_without_data_says_data_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ECGCAP_DATA"}
    env["ECGCAP_FLICKR8K_URL"] = "http://127.0.0.1:9"
    result = subprocess.run([sys.executable, "-m", "ecgcap.train_caption", "--dataset",
                             "flickr8k", "--device", "cpu"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot reach http://127.0.0.1:9/Flickr8k_Dataset.zip" in result.stderr
    assert "--data-dir" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def _assert_where_to_get_flickr30k(err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == 2
    assert FLICKR30K_FORM == "https://shannon.cs.illinois.edu/DenotationGraph/"
    assert FLICKR30K_FORM in message and "dataset_flickr30k.json" in message
    assert "captions.token" in message and "cannot be downloaded" in message


def test_flickr30k_without_a_copy_says_where_to_ask_for_it(tmp_path, monkeypatch):
    with pytest.raises(EcgcapError, match="no flickr30k dataset here") as err:
        load_captions("flickr30k", data_dir=tmp_path)
    _assert_where_to_get_flickr30k(err)
    assert str(err.value).startswith(f"{tmp_path}: ")
    # with no data folder named, nothing is fetched (unlike flickr8k)
    monkeypatch.delenv("ECGCAP_DATA", raising=False)
    monkeypatch.setenv("ECGCAP_FLICKR8K_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EcgcapError, match="no flickr30k dataset here") as err:
        load_captions("flickr30k")
    _assert_where_to_get_flickr30k(err)
    assert not list(tmp_path.iterdir())


def test_flickr30k_laid_out_as_the_message_says_loads(tmp_path):
    """The publisher's results_20130124.token renamed captions.token, photos in images/."""
    folder = tmp_path / "flickr30k"
    (folder / "images").mkdir(parents=True)
    for name in ("1000092795.jpg", "10002456.jpg"):
        (folder / "images" / name).write_bytes(_jpeg())
    (folder / "captions.token").write_text("".join(  # the publisher's spaced-out tokens
        f"{name}#{k}\tTwo young guys with shaggy hair look at their hands .\n"
        for name in ("1000092795.jpg", "10002456.jpg") for k in range(5)))
    data = load_captions("flickr30k", "train", data_dir=tmp_path, report=pytest.fail)
    assert data.images == ["1000092795.jpg", "10002456.jpg"]
    assert [len(c) for c in data.captions] == [5, 5]
