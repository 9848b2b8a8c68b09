"""``python -m ecgcap.caption`` and ``evaluate_caption``: bad models and options are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_module

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "neon_yell_forest_road.jpg"
ECG_MODEL = Path(__file__).resolve().parents[1] / "models" / "mitdb_lstm_beats.keras"


def _one_line(result, expected_end: str) -> None:
    lines = [x for x in result.stderr.splitlines() if x.startswith("python -m ecgcap.")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].endswith(expected_end), lines
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["ecgcap.caption", "ecgcap.evaluate_caption"])
def test_bad_decoding_options_are_one_line(module):
    image = [str(EXAMPLE)] if module == "ecgcap.caption" else []
    _one_line(run_module(module, *image, "--length-penalty", "-1"),
              "argument --length-penalty: '-1' must be a number >= 0 (see --help)")
    _one_line(run_module(module, *image, "--length-penalty", "long"),
              "argument --length-penalty: 'long' is not a number (see --help)")
    _one_line(run_module(module, *image, "--no-repeat", "1"),
              "argument --no-repeat: '1' must be 0 (off) or 2 or more (see --help)")


def test_bad_models_are_refused(tmp_path):
    _one_line(run_module("ecgcap.caption", str(EXAMPLE), "--model", str(tmp_path / "no.keras")),
              f"{tmp_path / 'no.keras'}: no such model file")
    _one_line(run_module("ecgcap.caption", str(EXAMPLE), "--model", str(ECG_MODEL)),
              f"{ECG_MODEL}: this is a 'ecg-beats' model, not caption")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    _one_line(run_module("ecgcap.caption", str(EXAMPLE), "--model", str(junk)),
              f"{junk}: corrupt or truncated model file (File is not a zip file)")

    import keras

    from ecgcap.runtime.modelfile import save_model

    inputs = keras.Input((2,))  # a caption model that would run arbitrary code when loaded
    lam = tmp_path / "lambda.keras"
    save_model(keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)), lam,
               {"kind": "caption"})
    result = run_module("ecgcap.caption", str(EXAMPLE), "--model", str(lam))
    assert result.returncode == 2 and "cannot load the model" in result.stderr, result.stderr
    assert not result.stdout.strip()


def test_bad_images_are_reported_while_the_good_ones_are_captioned(tmp_path):
    """One call with the shipped model: every odd but valid image gets a caption; each bad
    file is one line; the exit code says that some failed."""
    import json

    import numpy as np
    from PIL import Image

    img = Image.open(EXAMPLE).convert("RGB")
    good = {"cmyk.jpg": img.convert("CMYK"), "palette.png": img.convert("P"),
            "alpha.png": img.convert("RGBA"), "grey.png": img.convert("L"),
            "grey16.png": Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257),
            "tiny.png": Image.new("RGB", (1, 1), (0, 128, 0))}
    for name, image in good.items():
        image.save(tmp_path / name)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture\n")
    (tmp_path / "cut.jpg").write_bytes(EXAMPLE.read_bytes()[:600])
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 Mpixels, a few kB on disk
    bad = {"empty.jpg": "empty file", "text.jpg": "not an image Pillow can read",
           "cut.jpg": "truncated or corrupt", "bomb.png": "refused, not decoded",
           "missing.jpg": "no such image file"}
    result = run_module("ecgcap.caption", str(EXAMPLE), *(str(tmp_path / n) for n in good),
                        *(str(tmp_path / n) for n in bad), "--json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    captioned = json.loads(result.stdout)
    assert [Path(c["image"]).name for c in captioned] == [EXAMPLE.name, *good]
    assert all(len(c["caption"].split()) >= 3 for c in captioned)
    lines = [x for x in result.stderr.splitlines() if x.startswith("python -m ecgcap.caption")]
    assert len(lines) == len(bad)
    for name, message in bad.items():
        [line] = [x for x in lines if f"{tmp_path / name}:" in x]
        assert message in line, line


@pytest.mark.parametrize("args, message", [
    (["--beam", "0"], "argument --beam: '0' must be 1 or more (see --help)"),
    (["--beam", "two"], "argument --beam: 'two' is not an integer (see --help)"),
])
def test_bad_options(args, message):
    _one_line(run_module("ecgcap.caption", str(EXAMPLE), *args), message)


def test_train_caption_option_errors(tmp_path):
    _one_line(run_module("ecgcap.train_caption", "--encoder-filters", "8,x"),
              "argument --encoder-filters: '8,x' is not a comma-separated list of integers "
              "(see --help)")
    _one_line(run_module("ecgcap.train_caption", "--dataset", "coco2014", "--runs-dir",
                         str(tmp_path / "runs")),
              "coco2014: unknown dataset; give one of rsicd, flickr8k, flickr30k or a caption "
              "file (.json Karpathy or COCO, .jsonl)")
    (tmp_path / "runs").write_text("a file")
    _one_line(run_module("ecgcap.train_caption", "--runs-dir", str(tmp_path / "runs")),
              f"--runs-dir {tmp_path / 'runs'}: is a file, not a folder")
    _one_line(run_module("ecgcap.train_caption", "--backbone-weights", "imagenet"),
              "--backbone-weights imagenet: needs --backbone")
    _one_line(run_module("ecgcap.train_caption", "--backbone", "mobilenet_v2",
                         "--backbone-weights", str(tmp_path / "w.h5")),
              f"--backbone-weights {tmp_path / 'w.h5'}: no such weights file")
    _one_line(run_module("ecgcap.train_caption", "--encoder-weights", str(tmp_path / "w.h5")),
              f"--encoder-weights {tmp_path / 'w.h5'}: needs --encoder mobilenet_v2")
    _one_line(run_module("ecgcap.train_caption", "--encoder", "mobilenet_v2",
                         "--encoder-weights", str(tmp_path / "w.h5")),
              f"--encoder-weights {tmp_path / 'w.h5'}: no such weights file")
    _one_line(run_module("ecgcap.train_caption", "--encoder", "mobilenet_v2",
                         "--attention-penalty", "-1"),
              "--attention-penalty -1.0: must be 0 or more")


def test_shipped_captioner_describes_the_example_image():
    result = run_module("ecgcap.caption", str(EXAMPLE), "--model", "rsicd", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    [entry] = json.loads(result.stdout)
    assert entry["image"] == str(EXAMPLE)
    words = set(entry["caption"].split())
    assert len(words) >= 4 and words & {"trees", "forest", "woods"}, entry["caption"]


@pytest.mark.parametrize("name", ["photo", "rsicd"])
def test_shipped_captioners_are_one_small_safe_file_with_a_card(name):
    from ecgcap.captioning.inference import SHIPPED_MODELS, load_captioner

    path = SHIPPED_MODELS[name]
    assert path.stat().st_size <= 32 * 2**20
    model, info = load_captioner(name)  # safe mode, with its vocabulary
    assert info["encoder"] == "mobilenet_v2" and "stage" not in info
    assert len(model.get_layer("word_embedding").vocabulary) == info["vocabulary_size"]
    assert path.with_suffix(".md").is_file() and path.with_suffix(".report.json").is_file()


def test_default_captioner_describes_ordinary_photographs(flickr8k_dir):
    """Real Flickr8k dev photos (chosen on dev, never seen in training): a dog photo gets a
    dog, and photos of people get people."""
    import json

    from ecgcap.captioning.datasets import read_flickr8k

    dev = read_flickr8k(flickr8k_dir, "val", report=lambda line: None)
    dogs = [p for p, refs in zip(dev.paths(), dev.captions, strict=True)
            if all("dog" in r.lower() for r in refs)][:3]
    result = run_module("ecgcap.caption", *map(str, dogs), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    captions = [entry["caption"] for entry in json.loads(result.stdout)]
    assert len(dogs) == 3 and sum("dog" in c.split() for c in captions) >= 2, captions
    assert all(len(c.split()) >= 5 for c in captions), captions


def test_shipped_captioner_on_real_rsicd_images(rsicd_dir):
    from ecgcap.captioning.inference import caption_files, load_captioner

    model, info = load_captioner("rsicd")
    assert info["describes"] == "aerial and satellite images"
    images = [rsicd_dir / "images" / f for f in ("airport_1.jpg", "beach_10.jpg", "forest_1.jpg")]
    captions = dict(caption_files(images, model, beam=3))
    assert "airport" in captions[images[0]] or "planes" in captions[images[0]]
    assert "beach" in captions[images[1]] or "ocean" in captions[images[1]]
    assert "trees" in captions[images[2]]


def test_evaluate_refuses_an_existing_output_folder_before_any_work(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "scores.json").write_text("{}")
    result = run_module("ecgcap.evaluate_caption", "--out", str(out), "--data-dir",
                        str(tmp_path / "nowhere"), "--device", "cpu")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{out}: run folder exists" in result.stderr  # before looking for any data
    assert (out / "scores.json").read_text() == "{}"
