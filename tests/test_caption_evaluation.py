"""Caption scores (pycocoevalcap) and the two baselines every captioner is compared with."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ecgcap.captioning.evaluation import (
    consensus_caption,
    fixed_caption,
    nearest_neighbour,
    score_captions,
)

REFERENCES = [
    ["many green trees are around a white building", "a white building is surrounded by trees"],
    ["several planes are parked at the airport", "an airport with many planes and a runway"],
    ["the river runs through the green farmland", "a river is next to some farmland"],
]


def test_a_reference_scores_full_marks_and_nonsense_scores_nothing():
    perfect = score_captions(REFERENCES, [refs[0] for refs in REFERENCES], meteor=False)
    assert perfect["BLEU-1"] == pytest.approx(1.0) and perfect["BLEU-4"] == pytest.approx(1.0)
    assert perfect["ROUGE-L"] > 0.7 and perfect["CIDEr"] > 1.0
    assert perfect["distinct"] == 3
    nonsense = score_captions(REFERENCES, ["zebra xylophone quantum"] * 3, meteor=False)
    assert nonsense["BLEU-4"] < 1e-6 and nonsense["CIDEr"] == pytest.approx(0.0)
    assert nonsense["distinct"] == 1
    # one generic caption: some BLEU, little CIDEr (its words are in many references)
    generic = score_captions(REFERENCES, ["a green tree is next to a building"] * 3,
                             meteor=False)
    assert 0 < generic["CIDEr"] < perfect["CIDEr"] / 5
    with pytest.raises(ValueError, match="one candidate per image"):
        score_captions(REFERENCES, ["a"], meteor=False)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs on Java")
def test_meteor_runs_on_java():
    scores = score_captions(REFERENCES, [refs[0] for refs in REFERENCES])
    worse = score_captions(REFERENCES, ["a building", "planes", "a river"])
    assert 0.5 < scores["METEOR"] <= 1.0 and worse["METEOR"] < scores["METEOR"]


def test_fixed_caption_is_the_frequent_training_caption_that_suits_val_best():
    train = ["A red roof."] * 5 + ["many green trees are around a building"] * 3 + ["odd one"]
    val = [["many green trees are around a white building", "green trees around a building"],
           ["many green trees and a building", "trees are around a building"]]
    assert fixed_caption(train, val) == "many green trees are around a building"
    assert fixed_caption(train, val, candidates=1) == "a red roof"  # only the most frequent


def test_nearest_neighbour_returns_the_consensus_caption_of_the_closest_image():
    train_vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    train_captions = [["an airport", "an airport", "a runway"], ["a beach"],
                      ["a river", "A River!"]]
    vectors = np.array([[5.0, 0.2], [0.1, 3.0], [2.0, 2.1]])  # cosine, not distance
    assert nearest_neighbour(train_vectors, train_captions, vectors) == [
        "an airport", "a beach", "a river"]
    assert consensus_caption(["b c", "a", "b c"]) == "b c"
    assert consensus_caption(["x y", "z"]) == "x y"  # a tie goes to the first


def test_length_penalty_script_chooses_on_dev_and_writes_the_model(flickr8k_dir, tmp_path):
    """``benchmarks/caption_length_penalty.py`` on real Flickr8k dev photos with a small
    untrained photo captioner: a row per penalty, the best CIDEr written into the new file's
    info, the weights unchanged."""
    import subprocess
    import sys
    from pathlib import Path

    from ecgcap.captioning.inference import load_caption_decoder, load_captioner
    from ecgcap.captioning.models import build_captioner
    from ecgcap.captioning.text import SPECIALS
    from ecgcap.runtime.modelfile import read_info, save_model

    vocab = [*SPECIALS, *"a dog man in the water is on grass running".split()]
    model = build_captioner(vocab, image_size=32, max_length=8, encoder_filters=(4,),
                            code_dim=8, embed_dim=4, units=8, attention=True)
    source = tmp_path / "small.keras"
    save_model(model, source, {"kind": "caption", "dataset": "flickr8k"})
    out = tmp_path / "chosen.keras"
    script = Path(__file__).parents[1] / "benchmarks" / "caption_length_penalty.py"
    done = subprocess.run([sys.executable, str(script), "--model", str(source), "--data-dir",
                           str(flickr8k_dir.parent), "--penalties", "0", "2", "--write",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in ("0", "2")]
    assert len(rows) == 2
    # the printed CIDEr is rounded: the chosen row must hold the highest printed figure (two
    # penalties can print the same figure and differ in the digits the script compares)
    best = done.stdout.split("best CIDEr: length penalty ")[1].split()[0]
    chosen = next(r for r in rows if r[0] == best)
    assert float(chosen[2]) == max(float(r[2]) for r in rows)
    assert read_info(out)["length_penalty"] == float(best)
    decoder, _ = load_caption_decoder(out, runtime="keras")
    assert decoder.length_penalty == float(best)
    for a, b in zip(model.get_weights(), load_captioner(out)[0].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
