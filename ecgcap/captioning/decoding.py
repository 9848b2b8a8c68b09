"""Greedy and beam-search decoding, batched over images, one compiled decoder step per token.

The image is encoded once; then each step runs the decoder's one-step model
(:func:`ecgcap.captioning.models.decoder_parts`) on all live hypotheses of all images at once
through ``predict_on_batch`` (a compiled function: ``tf.function`` or ``jax.jit``), never
``model.predict`` per word. Decoding is deterministic; ties go to the lower token id, and
``beam=1`` gives exactly the greedy captions. The commands (``caption``, ``evaluate_caption``)
also forbid a caption to repeat one of its own trigrams (``no_repeat_ngram=3``, chosen on
Flickr8k's dev split and RSICD's val split); :class:`CaptionDecoder` itself applies no such
rule unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgcap.captioning.text import END, PAD, START, UNK, Vocabulary

if TYPE_CHECKING:
    import keras

    from ecgcap.captioning.models import DecoderParts

_NEVER = (PAD, UNK, START)  # tokens a decoder never emits
NO_REPEAT_NGRAM = 3  # the commands' default: no caption repeats one of its own trigrams
LENGTH_PENALTY = 1.0  # beam search's default length normalisation (a model file may name its own)


def model_length_penalty(info: dict[str, Any], override: float | None = None) -> float:
    """``override`` when given (``--length-penalty``), else the length penalty a captioner
    file's ``info`` names as its decoding default (chosen on its selection split, as a Hugging
    Face ``generation_config`` does), else :data:`LENGTH_PENALTY`."""
    if override is not None:
        return float(override)
    return float(info.get("length_penalty", LENGTH_PENALTY))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def ban_repeated_ngrams(logp: np.ndarray, seqs: np.ndarray, n: int) -> None:
    """Set to -inf, in place, the log-probability of every token that would complete an
    ``n``-gram the hypothesis already holds. ``logp``: ``(images, beam, vocabulary)``;
    ``seqs``: the hypotheses so far, ``(images, beam, steps)``.

    >>> logp = np.zeros((1, 1, 5)); seqs = np.array([[[1, 2, 3, 1]]])
    >>> ban_repeated_ngrams(logp, seqs, 2); np.isinf(logp[0, 0]).nonzero()[0].tolist()
    [2]
    """
    steps = seqs.shape[-1]
    if steps < n:
        return
    prefix = seqs[..., steps - n + 1:]  # the n-1 tokens a next token would extend
    for start in range(steps - n + 1):  # every n-gram already in the hypothesis
        same = (seqs[..., start:start + n - 1] == prefix).all(-1)
        image, hyp = np.nonzero(same)
        logp[image, hyp, seqs[image, hyp, start + n - 1]] = -np.inf


class CaptionDecoder:
    """Caption images with a trained captioner.

    >>> decoder = CaptionDecoder(model)                        # doctest: +SKIP
    >>> decoder.caption(images, beam=3)                        # doctest: +SKIP
    ['many buildings and green trees are around a playground']
    """

    def __init__(self, captioner: keras.Model | Any, *, batch_size: int = 256,
                 length_penalty: float = LENGTH_PENALTY):
        """``captioner``: a Keras captioner, or decoding parts already made (its
        :func:`~ecgcap.captioning.models.decoder_parts`, or an exported captioner's
        :func:`~ecgcap.captioning.litert.load_captioner_litert`). ``length_penalty``: the
        default of :meth:`decode` (:func:`model_length_penalty` reads a model file's)."""
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be 0 or more, got {length_penalty}")
        self.length_penalty = float(length_penalty)
        if hasattr(captioner, "step") and hasattr(captioner, "vocabulary"):
            self.parts: DecoderParts = captioner
        else:
            from ecgcap.captioning.models import decoder_parts

            self.parts = decoder_parts(captioner)
        self.vocabulary = Vocabulary(self.parts.vocabulary)
        self.batch_size = batch_size
        self._end = self.vocabulary.index[END]
        self._never = [self.vocabulary.index[t] for t in _NEVER]

    @property
    def image_size(self) -> int:
        size = getattr(self.parts, "image_size", None)
        return int(size if size is not None else self.parts.encoder.inputs[0].shape[1])

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, H, W, 3)`` -> ``(feature_map, vector)``."""
        fmaps, vecs = [], []
        for i in range(0, len(images), self.batch_size):
            fm, v = self.parts.encoder.predict_on_batch(
                np.asarray(images[i:i + self.batch_size], dtype=np.float32))
            fmaps.append(np.asarray(fm))
            vecs.append(np.asarray(v))
        return np.concatenate(fmaps), np.concatenate(vecs)

    def _step(self, tokens: np.ndarray, vector: np.ndarray, fmap: np.ndarray,
              states: list[np.ndarray], *, allow_all: bool = False
              ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Log-probabilities of the next token (tokens never emitted at -inf unless
        ``allow_all``) and the new states."""
        out = self.parts.step.predict_on_batch(
            [tokens.reshape(-1, 1).astype(np.int32), vector, fmap, *states])
        logp = _log_softmax(np.asarray(out[0]))
        if not allow_all:
            logp[:, self._never] = -np.inf
        return logp, [np.asarray(s) for s in out[1:1 + len(states)]]

    def _beam_chunk(self, fmap: np.ndarray, vector: np.ndarray, beam: int,
                    length_penalty: float, no_repeat_ngram: int = 0) -> list[list[int]]:
        n = len(vector)
        states = [np.repeat(np.asarray(s), beam, axis=0)
                  for s in self.parts.init.predict_on_batch(vector)]
        vector_b, fmap_b = np.repeat(vector, beam, axis=0), np.repeat(fmap, beam, axis=0)
        score = np.full((n, beam), -np.inf)
        score[:, 0] = 0.0
        tokens = np.full(n * beam, self.vocabulary.index[START])
        seqs = np.zeros((n, beam, 0), dtype=np.int64)
        lengths = np.zeros((n, beam))
        finished = np.zeros((n, beam), dtype=bool)
        for _ in range(self.parts.max_length - 1):
            logp, states = self._step(tokens, vector_b, fmap_b, states)
            logp = logp.reshape(n, beam, -1)
            vocab = logp.shape[-1]
            if no_repeat_ngram:
                ban_repeated_ngrams(logp, seqs, no_repeat_ngram)
            logp[finished] = -np.inf  # a finished hypothesis only repeats <end>, at no cost
            logp[finished, self._end] = 0.0
            cand = (score[..., None] + logp).reshape(n, -1)
            top = np.argsort(-cand, axis=1, kind="stable")[:, :beam]
            origin, word = top // vocab, top % vocab
            score = np.take_along_axis(cand, top, axis=1)
            was_finished = np.take_along_axis(finished, origin, axis=1)
            lengths = np.take_along_axis(lengths, origin, axis=1) + ~was_finished
            finished = was_finished | (word == self._end)
            seqs = np.concatenate([np.take_along_axis(seqs, origin[..., None], axis=1),
                                   word[..., None]], axis=2)
            flat = (np.arange(n)[:, None] * beam + origin).reshape(-1)
            states = [s[flat] for s in states]
            tokens = word.reshape(-1)
            if finished.all():
                break
        normalised = score / np.maximum(lengths, 1.0) ** length_penalty
        best = np.argmax(normalised, axis=1)
        return [seqs[i, best[i]].tolist() for i in range(n)]

    def decode(self, images: np.ndarray, *, beam: int = 1, length_penalty: float | None = None,
               no_repeat_ngram: int = 0) -> list[list[int]]:
        """Token ids of each image's caption (``beam=1``: greedy). Length normalisation divides a
        hypothesis's log-probability by its length (with ``<end>``) to the ``length_penalty``
        (``None``: the decoder's default; 0: no normalisation).
        ``no_repeat_ngram=n`` (n >= 2) never lets a caption repeat one of its own n-grams
        ("in the snow in the snow" with n=3), as ``no_repeat_ngram_size`` in Hugging Face's
        ``generate``; 0 turns the rule off."""
        if beam < 1:
            raise ValueError(f"beam must be 1 or more, got {beam}")
        length_penalty = self.length_penalty if length_penalty is None else length_penalty
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be 0 or more, got {length_penalty}")
        if no_repeat_ngram != 0 and no_repeat_ngram < 2:
            raise ValueError(f"no_repeat_ngram must be 0 (off) or 2 or more, got {no_repeat_ngram}")
        out: list[list[int]] = []
        chunk = max(1, self.batch_size // beam)
        for i in range(0, len(images), chunk):
            fmap, vector = self.encode(images[i:i + chunk])
            out.extend(self._beam_chunk(fmap, vector, beam, length_penalty, no_repeat_ngram))
        return out

    def attention(self, images: np.ndarray, captions: Sequence[Sequence[int]]
                  ) -> list[np.ndarray]:
        """Where the model looked for each word of ``captions`` (token ids, as :meth:`decode`
        gives them): per image ``(words + 1, regions)`` attention weights, one row per word and
        one for ``<end>``. Only for captioners with soft attention that reports its weights."""
        if not self.parts.returns_attention:
            raise ValueError("this captioner does not report its attention weights")
        fmap, vector = self.encode(images)
        lengths = [len(c) for c in captions]
        steps = max(lengths) if lengths else 0
        tokens = np.zeros((len(images), steps), dtype=np.int64)
        for i, c in enumerate(captions):
            tokens[i, :len(c)] = c
        states = [np.asarray(s) for s in self.parts.init.predict_on_batch(vector)]
        prev = np.full(len(images), self.vocabulary.index[START])
        alphas = []
        for t in range(steps):
            out = self.parts.step.predict_on_batch(
                [prev.reshape(-1, 1).astype(np.int32), vector, fmap, *states])
            states = [np.asarray(s) for s in out[1:-1]]
            alphas.append(np.asarray(out[-1]))
            prev = tokens[:, t]
        stacked = np.stack(alphas, 1) if alphas else np.zeros((len(images), 0, fmap.shape[1]))
        return [stacked[i, :n] for i, n in enumerate(lengths)]

    def caption(self, images: np.ndarray, *, beam: int = 1, length_penalty: float | None = None,
                no_repeat_ngram: int = 0) -> list[str]:
        """One caption (words joined by spaces) per image."""
        return [self.vocabulary.decode(ids)
                for ids in self.decode(images, beam=beam, length_penalty=length_penalty,
                                       no_repeat_ngram=no_repeat_ngram)]


def greedy_with_predict(captioner: keras.Model, images: np.ndarray,
                        vocabulary: Sequence[str]) -> list[str]:
    """Greedy captions the slow, textbook way: ``model.predict`` on the whole teacher-forced
    model once per word, re-reading the prefix each time. The reference that the compiled
    decoder is tested and benchmarked against."""
    vocab = Vocabulary(vocabulary)
    steps = int(captioner.input["caption"].shape[-1])
    seqs = np.zeros((len(images), 1, steps + 1), dtype=np.int32)
    seqs[:, 0, 0] = vocab.index[START]
    never = [vocab.index[t] for t in _NEVER]
    done = np.zeros(len(images), dtype=bool)
    for t in range(steps):
        logits = captioner.predict({"image": images.astype(np.float32),
                                    "caption": seqs[:, :, :steps]},
                                   verbose=0)["words"][:, 0, t].astype(np.float64)
        logits[:, never] = -np.inf
        seqs[:, 0, t + 1] = np.where(done, vocab.index[END], logits.argmax(-1))
        done |= seqs[:, 0, t + 1] == vocab.index[END]
        if done.all():
            break
    return [vocab.decode(s[0, 1:]) for s in seqs]
