"""Captioner builders and decoders: shapes, a step lowers the loss, save/load, and the compiled
one-step decoder agrees with the teacher-forced model."""

from __future__ import annotations

import numpy as np
import pytest

from ecgcap.captioning.decoding import CaptionDecoder, greedy_with_predict
from ecgcap.captioning.inference import load_captioner
from ecgcap.captioning.models import build_captioner, build_encoder, decoder_parts
from ecgcap.captioning.text import SPECIALS
from ecgcap.captioning.training import words_loss
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.modelfile import save_model

VOCAB = [*SPECIALS, *"many green trees are near a river some planes parked airport".split()]
SMALL = dict(image_size=32, max_length=10, encoder_filters=(8, 16), code_dim=16, embed_dim=8,
             units=16)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype(np.float32)


def _captions(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, k, 10), dtype=np.int32)
    out[:, :, 0] = 2
    out[:, :, 1:7] = rng.integers(4, len(VOCAB), (n, k, 6))
    out[:, :, 7] = 3
    return out


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("inject", ["init", "every", "both"])
def test_output_shapes(attention, inject):
    model = build_captioner(VOCAB, attention=attention, inject=inject, scene_classes=3, **SMALL)
    for k in (1, 5):
        out = model.predict({"image": _images(2), "caption": _captions(2, k)[:, :, :-1]},
                            verbose=0)
        assert out["words"].shape == (2, k, 9, len(VOCAB))
        assert out["scene"].shape == (2, 3)
        np.testing.assert_allclose(out["scene"].sum(-1), 1.0, rtol=1e-5)


def test_each_caption_is_decoded_with_its_own_image():
    model = build_captioner(VOCAB, **SMALL)
    caps = _captions(3, 2)[:, :, :-1]
    both = model.predict({"image": _images(3), "caption": caps}, verbose=0)["words"]
    for i in range(3):
        for k in range(2):
            alone = model.predict({"image": _images(3)[i:i + 1], "caption": caps[i:i + 1, k:k + 1]},
                                  verbose=0)["words"]
            np.testing.assert_allclose(alone[0, 0], both[i, k], atol=1e-4)


def test_encoder_gives_feature_map_and_code():
    enc = build_encoder(64, filters=(8, 16, 32), code_dim=12)
    fmap, vec = enc.predict(_images(2, 1).repeat(2, 1).repeat(2, 2), verbose=0)
    assert fmap.shape == (2, 64, 32) and vec.shape == (2, 12)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_encoder(64, backbone="vgg99")
    backbone = build_encoder(64, backbone="mobilenet_v2", code_dim=12)  # weights=None
    assert backbone.output_shape[0] == (None, 4, 1280)


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match="inject"):
        build_captioner(VOCAB, inject="sometimes", **SMALL)
    with pytest.raises(ValueError, match="dropout"):
        build_captioner(VOCAB, dropout=1.0, **SMALL)


def test_a_training_step_lowers_the_loss():
    import keras

    keras.utils.set_random_seed(0)
    model = build_captioner(VOCAB, attention=True, dropout=0.0, **SMALL)
    model.compile(keras.optimizers.Adam(1e-2), loss={"words": words_loss()})
    caps = np.zeros((4, 5, 10), dtype=np.int32)
    caps[:, :, :9] = [2, 4, 5, 6, 7, 8, 9, 10, 3]  # one learnable sentence
    x, y = {"image": _images(4), "caption": caps[:, :, :-1]}, {"words": caps[:, :, 1:]}
    losses = [float(model.train_on_batch(x, y)) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]


def test_loss_ignores_padding():
    import keras

    caps = _captions(2, 1)
    logits = np.random.default_rng(0).normal(size=(2, 1, 9, len(VOCAB))).astype(np.float32)
    target = caps[:, :, 1:]
    other = logits.copy()
    other[:, :, 7:] = 100.0  # garbage after <end>, where the targets are padding
    loss = words_loss()
    assert float(loss(target, logits)) == pytest.approx(float(loss(target, other)), rel=1e-6)
    assert keras.ops.convert_to_numpy(target)[0, 0, -1] == 0


@pytest.mark.parametrize("attention", [False, True])
def test_save_load_round_trip_keeps_outputs_and_vocabulary(tmp_path, attention):
    model = build_captioner(VOCAB, attention=attention, scene_classes=2, **SMALL)
    save_model(model, tmp_path / "c.keras", {"kind": "caption"})
    loaded, info = load_captioner(tmp_path / "c.keras")
    x = {"image": _images(2), "caption": _captions(2, 1)[:, :, :-1]}
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["words"],
                               model.predict(x, verbose=0)["words"], atol=1e-6)
    assert loaded.get_layer("word_embedding").vocabulary == VOCAB
    assert CaptionDecoder(loaded).caption(_images(3)) == CaptionDecoder(model).caption(_images(3))


def test_load_refuses_other_kinds_and_models_without_vocabulary(tmp_path):
    import keras

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    save_model(plain, tmp_path / "ecg.keras", {"kind": "ecg-beats"})
    with pytest.raises(EcgcapError, match="'ecg-beats' model, not caption"):
        load_captioner(tmp_path / "ecg.keras")
    save_model(plain, tmp_path / "novocab.keras", {"kind": "caption"})
    with pytest.raises(EcgcapError, match="no vocabulary"):
        load_captioner(tmp_path / "novocab.keras")


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("inject", ["init", "every"])
def test_compiled_greedy_equals_word_by_word_predict(attention, inject):
    import keras

    keras.utils.set_random_seed(1)
    model = build_captioner(VOCAB, attention=attention, inject=inject, **SMALL)
    images = _images(5, 3)
    decoder = CaptionDecoder(model)
    greedy = decoder.caption(images)
    assert greedy == greedy_with_predict(model, images, VOCAB)
    assert decoder.caption(images, beam=1) == greedy  # beam 1 is greedy
    assert decoder.caption(images) == greedy  # deterministic


def test_beam_search_finds_likelier_captions_and_is_batch_independent():
    import keras

    keras.utils.set_random_seed(2)
    model = build_captioner(VOCAB, attention=True, **SMALL)
    images = _images(6, 4)
    decoder = CaptionDecoder(model, batch_size=4)
    parts = decoder_parts(model)
    greedy = decoder.decode(images)
    beam = decoder.decode(images, beam=4, length_penalty=0.0)

    def log_prob(ids, i):
        fmap, vec = decoder.encode(images[i:i + 1])
        states = [np.asarray(s) for s in parts.init.predict_on_batch(vec)]
        total, token = 0.0, 2
        for t in ids:
            logp, states = decoder._step(np.array([token]), vec, fmap, states)
            total += logp[0, t]
            token = t
            if t == 3:
                break
        return total

    def length(ids):  # words and <end>, as the decoder counts them
        return ids.index(3) + 1 if 3 in ids else len(ids)

    normalised = decoder.decode(images, beam=4, length_penalty=1.0)
    for i in range(len(images)):
        assert log_prob(beam[i], i) >= log_prob(greedy[i], i) - 1e-6
        # the same beam, the final pick by log-probability per word instead of in total
        assert log_prob(beam[i], i) >= log_prob(normalised[i], i) - 1e-6
        assert (log_prob(normalised[i], i) / length(normalised[i])
                >= log_prob(beam[i], i) / length(beam[i]) - 1e-6)
    one_by_one = [CaptionDecoder(model).decode(images[i:i + 1], beam=4, length_penalty=0.0)[0]
                  for i in range(len(images))]
    assert one_by_one == beam
    with pytest.raises(ValueError, match="beam"):
        decoder.decode(images, beam=0)


def _words(ids: list[int]) -> list[int]:
    return ids[:ids.index(3)] if 3 in ids else ids  # up to <end>


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    words = _words(ids)
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


@pytest.mark.parametrize("beam", [1, 3])
def test_no_repeat_ngram_forbids_a_caption_its_own_ngrams(beam):
    import keras

    keras.utils.set_random_seed(4)
    model = build_captioner(VOCAB, attention=True, **SMALL)
    images = _images(8, 6)
    decoder = CaptionDecoder(model)
    free = decoder.decode(images, beam=beam)
    # an untrained model loops on a few words: the rule must have something to forbid
    assert any(len(set(g)) < len(g) for g in (_ngrams(c, 2) for c in free))
    for n in (2, 3):
        ruled = decoder.decode(images, beam=beam, no_repeat_ngram=n)
        for caption in ruled:
            grams = _ngrams(caption, n)
            assert len(set(grams)) == len(grams), caption
        other = CaptionDecoder(model, batch_size=3).decode(images, beam=beam, no_repeat_ngram=n)
        assert [_words(c) for c in other] == [_words(c) for c in ruled]  # batch independent
    # captions that repeat nothing are left as they were
    for before, after in zip(free, decoder.decode(images, beam=beam, no_repeat_ngram=2),
                             strict=True):
        if beam == 1 and len(set(_ngrams(before, 2))) == len(_ngrams(before, 2)):
            assert _words(after) == _words(before)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        decoder.decode(images, no_repeat_ngram=1)


def test_length_penalty_is_the_decoders_default_and_a_model_file_names_its_own(tmp_path):
    import keras

    from ecgcap.captioning.inference import caption_files, load_caption_decoder

    keras.utils.set_random_seed(5)
    model = build_captioner(VOCAB, attention=True, **SMALL)
    kernel, bias = model.get_layer("word_logits").get_weights()
    bias[VOCAB.index("<end>")] = 1.0  # short and long hypotheses compete in the beam
    model.get_layer("word_logits").set_weights([kernel, bias])
    images = _images(12, 7)
    by_penalty = {p: CaptionDecoder(model).decode(images, beam=3, length_penalty=p)
                  for p in (0.0, 0.75, 3.0)}
    assert by_penalty[0.0] != by_penalty[3.0]  # the penalty changes which beam wins
    for p, ids in by_penalty.items():
        assert CaptionDecoder(model, length_penalty=p).decode(images, beam=3) == ids
    with pytest.raises(ValueError, match="length_penalty"):
        CaptionDecoder(model, length_penalty=-0.5)
    # a model file's info names its default; caption_files uses it unless told otherwise
    path = tmp_path / "m.keras"
    save_model(model, path, {"kind": "caption", "length_penalty": 3.0})
    decoder, info = load_caption_decoder(path, runtime="keras")
    assert decoder.length_penalty == 3.0 == info["length_penalty"]
    plain = tmp_path / "plain.keras"
    save_model(model, plain, {"kind": "caption"})
    assert load_caption_decoder(plain, runtime="keras")[0].length_penalty == 1.0
    with pytest.raises(EcgcapError, match="--length-penalty -1"):
        caption_files([tmp_path / "none.png"], decoder, length_penalty=-1)


def test_teacher_forcing_gap_measures_the_model_it_is_given():
    import keras

    from ecgcap.captioning.diagnostics import teacher_forcing_gap
    from ecgcap.captioning.text import Vocabulary

    keras.utils.set_random_seed(3)
    model = build_captioner(VOCAB, attention=True, **SMALL)
    references = [["many green trees are near a river", "some planes parked"],
                  ["a river near an airport", "many planes"]]  # "an" is <unk>
    images = _images(2, 5)
    gap = teacher_forcing_gap(model, images, references)
    # the teacher-forced loss is the model's own cross-entropy on the references, per word
    vocab = Vocabulary(VOCAB)
    ids = np.stack([[vocab.encode(r, 10) for r in refs] for refs in references])
    logits = model.predict({"image": images, "caption": ids[:, :, :-1]}, verbose=0)["words"]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                           keepdims=True)) \
        - logits.max(-1, keepdims=True)
    target = ids[:, :, 1:]
    nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
    expected = nll[target > 0].mean()
    assert gap["teacher_forced"]["loss"] == pytest.approx(expected, rel=1e-4)
    assert gap["reference_words"] == int((target > 0).sum())
    for regime in ("teacher_forced", "free_running"):
        assert 0 <= gap[regime]["next_word_accuracy"] <= 1 and 0 <= gap[regime]["bleu4"] <= 1
    # when the references are the model's own greedy captions, feeding the reference or the
    # model's own word is the same thing: both regimes must agree
    own = [[c] for c in CaptionDecoder(model).caption(images)]
    same = teacher_forcing_gap(model, images, own)
    assert same["free_running"]["loss"] == pytest.approx(same["teacher_forced"]["loss"])
    assert same["free_running"]["next_word_accuracy"] == \
        same["teacher_forced"]["next_word_accuracy"]
