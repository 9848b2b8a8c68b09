"""Teacher forcing made visible: the same captioner, fed the reference words or its own.

In training the decoder always sees the true previous word (teacher forcing). When it captions,
it sees its own previous word, and an early mistake is never corrected by the data. The gap
between the two regimes (exposure bias) is measured on the same images and reference captions:

- loss: the cross-entropy of each reference word, given the reference prefix (teacher-forced)
  or given the model's own greedy prefix (free-running), per word, over all references;
- next-word accuracy under both regimes;
- BLEU-4 of the teacher-forced argmax sequence (each word predicted from the true prefix)
  against that of the free-running greedy caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ecgcap.captioning.decoding import CaptionDecoder
from ecgcap.captioning.text import END, PAD, START, UNK


def _bleu4(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {i: list(r) for i, r in enumerate(references)}
    res = {i: [c or "<empty>"] for i, c in enumerate(candidates)}
    return float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])


def teacher_forcing_gap(model: keras.Model, images: np.ndarray,
                        references: Sequence[Sequence[str]], *,
                        batch_size: int = 256) -> dict[str, Any]:
    """Loss, next-word accuracy and BLEU-4 of ``model`` teacher-forced and free-running.

    ``references``: the reference captions of each image (all are used for the losses).
    """
    decoder = CaptionDecoder(model, batch_size=batch_size)
    vocab = decoder.vocabulary
    length = decoder.parts.max_length
    rows = [(i, vocab.encode(r, length)) for i, refs in enumerate(references) for r in refs]
    owner = np.array([i for i, _ in rows])
    ids = np.stack([r for _, r in rows])  # (R, length): <start> words <end> <pad>...
    target = ids[:, 1:]
    valid = target > 0
    never = [vocab.index[t] for t in (PAD, UNK, START)]
    fmap, vec = decoder.encode(images)
    totals = {"tf_nll": 0.0, "fr_nll": 0.0, "tf_hits": 0, "fr_hits": 0}
    tf_words = np.zeros_like(target)
    for s in range(0, len(ids), batch_size):
        sel = slice(s, s + batch_size)
        f, v = fmap[owner[sel]], vec[owner[sel]]
        states = {m: [np.asarray(x) for x in decoder.parts.init.predict_on_batch(v)]
                  for m in ("tf", "fr")}
        token = {"tf": ids[sel, 0], "fr": ids[sel, 0]}
        for t in range(target.shape[1]):
            want, ok = target[sel, t], valid[sel, t]
            for mode in ("tf", "fr"):
                logp, states[mode] = decoder._step(token[mode], v, f, states[mode],
                                                   allow_all=True)
                picked = logp[np.arange(len(want)), want]
                logp[:, never] = -np.inf  # what the decoder may emit
                best = logp.argmax(-1)
                totals[f"{mode}_nll"] += float(-(picked * ok).sum())
                totals[f"{mode}_hits"] += int(((best == want) & ok).sum())
                if mode == "tf":
                    tf_words[sel, t] = best
                    token["tf"] = ids[sel, t + 1]
                else:
                    token["fr"] = best
    words = int(valid.sum())
    end = vocab.index[END]
    # teacher-forced sequence: each position's argmax, cut at the reference's length
    tf_captions: dict[int, str] = {}
    for r, (i, _) in enumerate(rows):
        if i not in tf_captions:  # the first reference of each image drives its sequence
            n = int(valid[r].sum())
            seq = [w for w in tf_words[r, :n] if w != end]
            tf_captions[i] = vocab.decode(seq)
    refs_tok = [[vocab.decode(vocab.encode(r, length)) for r in refs] for refs in references]
    free = decoder.caption(images)
    return {
        "images": len(images), "reference_words": words,
        "teacher_forced": {"loss": totals["tf_nll"] / words,
                           "next_word_accuracy": totals["tf_hits"] / words,
                           "bleu4": _bleu4(refs_tok, [tf_captions[i]
                                                      for i in range(len(images))])},
        "free_running": {"loss": totals["fr_nll"] / words,
                         "next_word_accuracy": totals["fr_hits"] / words,
                         "bleu4": _bleu4(refs_tok, free)},
    }


def format_gap(gap: dict[str, Any]) -> str:
    """The two regimes side by side."""
    lines = [f"{'':16}{'loss/word':>11}{'next-word acc':>15}{'BLEU-4':>9}"]
    for name, key in (("teacher-forced", "teacher_forced"), ("free-running", "free_running")):
        r = gap[key]
        lines.append(f"{name:16}{r['loss']:11.3f}{r['next_word_accuracy']:15.3f}"
                     f"{r['bleu4']:9.3f}")
    return "\n".join(lines)
