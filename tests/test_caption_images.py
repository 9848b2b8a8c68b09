"""The image loader: every mode Pillow reads becomes RGB of the model's size; bad files are one
clear error; augmentation only flips and rotates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecgcap.captioning.images import augment, find_images, load_image, load_images
from ecgcap.runtime.errors import EcgcapError


@pytest.fixture
def real_jpg(rsicd_dir):
    return rsicd_dir / "images" / "airport_1.jpg"


def test_real_rsicd_image(real_jpg):
    img = load_image(real_jpg, 96)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a real picture, not a blank
    assert load_image(real_jpg, (64, 32)).shape == (64, 32, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA", "CMYK", "I;16", "I", "F", "1",
                                  "RGB"])
def test_every_mode_becomes_rgb(tmp_path, real_jpg, mode):
    src = Image.open(real_jpg).convert("RGB")
    img = src.convert(mode) if mode not in ("I;16",) else src.convert("L").convert("I;16")
    suffix = ".tif" if mode in ("CMYK", "I;16", "I", "F", "LA", "PA") else ".png"
    path = tmp_path / f"image{suffix}"
    img.save(path)
    out = load_image(path, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out.std() > 5, mode


def test_16_bit_grey_uses_the_whole_range(tmp_path):
    a = (np.linspace(0, 1, 64 * 64).reshape(64, 64) * 4000).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "grey16.png")
    out = load_image(tmp_path / "grey16.png", 64)
    assert out.min() == 0 and out.max() == 255 and (out[..., 0] == out[..., 1]).all()


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = (255, 0, 0, 255)  # top half red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = load_image(tmp_path / "alpha.png", 8)
    assert (out[0, 0] == (255, 0, 0)).all() and (out[7, 7] == (255, 255, 255)).all()


def test_tiny_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "one.png")
    assert (load_image(tmp_path / "one.png", 16) == (10, 200, 30)).all()


def test_bad_files_are_one_clear_error(tmp_path, real_jpg):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "cut.jpg").write_bytes(real_jpg.read_bytes()[:600])
    (tmp_path / "folder.jpg").mkdir()
    cases = {"missing.jpg": "no such image file", "empty.jpg": "empty file",
             "text.jpg": "not an image Pillow can read", "cut.jpg": "truncated or corrupt",
             "folder.jpg": "is a folder"}
    for name, message in cases.items():
        with pytest.raises(EcgcapError, match=message) as err:
            load_image(tmp_path / name, 32)
        assert str(err.value).startswith(str(tmp_path / name))
        assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 Mpixels, ~10 kB on disk
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(EcgcapError, match="image too large .*refused, not decoded"):
        load_image(tmp_path / "bomb.png", 32)


def test_find_images_expands_folders(tmp_path, real_jpg):
    (tmp_path / "b.jpg").write_bytes(real_jpg.read_bytes())
    (tmp_path / "a.PNG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_images([tmp_path])] == ["a.PNG", "b.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(EcgcapError, match="holds no image files"):
        find_images([tmp_path / "empty"])


def test_load_images_caches_decoded_arrays(rsicd_dir, monkeypatch):
    paths = sorted((rsicd_dir / "images").glob("beach_1*.jpg"))[:4]
    first = load_images(paths, 24)
    import ecgcap.captioning.images as images

    monkeypatch.setattr(images, "load_image", lambda *a: pytest.fail("decoded again"))
    assert np.array_equal(load_images(paths, 24), first)


def test_augment_only_flips_and_rotates():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 255, (16, 5, 5, 3), dtype=np.uint8)
    out = augment(batch, np.random.default_rng(1))
    views = lambda a: [np.rot90(a, k)[:, ::f] for k in range(4) for f in (1, -1)]  # noqa: E731
    for a, b in zip(batch, out, strict=True):
        assert any(np.array_equal(b, v) for v in views(a))
    assert not np.array_equal(out, batch)  # something changed
    assert np.array_equal(out, augment(batch, np.random.default_rng(1)))  # repeatable
