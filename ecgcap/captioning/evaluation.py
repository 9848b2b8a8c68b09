"""Scoring captions the way the field does (the COCO caption evaluation code), and baselines.

``score_captions`` runs pycocoevalcap: the PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L and CIDEr
(Java runs the tokenizer and METEOR). Two baselines are computed on the same images:
``fixed_caption`` (the single training caption that scores best, chosen on val) and
``nearest_neighbour`` (the caption of the most similar training image under the model's own
image vector). ``caption_sheet`` writes an HTML page of images with generated and reference
captions.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecgcap.captioning.text import tokenize
from ecgcap.runtime.files import atomic_write_text

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def score_captions(references: Sequence[Sequence[str]], candidates: Sequence[str], *,
                   meteor: bool = True) -> dict[str, float]:
    """Corpus scores of ``candidates`` (one per image) against ``references`` (several each).

    ``meteor=False`` skips METEOR (slow, needs Java). Also reports ``distinct``, the number of
    different candidate captions.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if len(references) != len(candidates) or not candidates:
        raise ValueError(f"need one candidate per image; got {len(candidates)} candidates for "
                         f"{len(references)} images")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs]
                              for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": c or "."}] for i, c in enumerate(candidates)})
    res = {i: [c if c.strip() else "<empty>" for c in caps] for i, caps in res.items()}
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        out["METEOR"] = float(Meteor().compute_score(gts, res)[0])  # Java stops in __del__
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["distinct"] = float(len(set(candidates)))
    out["vocabulary"] = float(len({w for c in candidates for w in tokenize(c)}))
    return out


def _key(caption: str) -> str:
    return " ".join(tokenize(caption))


def fixed_caption(train_captions: Sequence[str], val_references: Sequence[Sequence[str]], *,
                  candidates: int = 100) -> str:
    """The single caption, among the ``candidates`` most frequent training captions, with the
    best CIDEr when given to every val image (chosen on val, never on test)."""
    from ecgcap.captioning.training import cider

    counts = Counter(_key(c) for c in train_captions if _key(c))
    pool = [c for c, _ in counts.most_common(candidates)]
    scores = [cider(val_references, [c] * len(val_references)) for c in pool]
    return pool[int(np.argmax(scores))]


def consensus_caption(captions: Sequence[str]) -> str:
    """The most frequent of an image's captions (the first on a tie), in ecgcap's tokens."""
    keys = [_key(c) for c in captions if _key(c)]
    counts = Counter(keys)
    return max(keys, key=lambda k: (counts[k], -keys.index(k)))


def nearest_neighbour(train_vectors: np.ndarray, train_captions: Sequence[Sequence[str]],
                      vectors: np.ndarray, *, k: int = 1) -> list[str]:
    """For each row of ``vectors``, the most typical caption of the ``k`` training images whose
    vectors are closest by cosine similarity (Devlin et al. 2015): the caption whose 1- and
    2-grams agree best (mean cosine) with the other captions of those images. ``k=1``: the
    consensus caption of the nearest image."""
    def unit(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    sims = unit(vectors) @ unit(train_vectors).T
    if k <= 1:
        return [consensus_caption(train_captions[i]) for i in np.argmax(sims, axis=1)]
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [typical_caption([c for i in row for c in train_captions[i]]) for row in nearest]


def typical_caption(captions: Sequence[str]) -> str:
    """The caption (in ecgcap's tokens) with the highest mean cosine similarity of its 1- and
    2-gram counts to the other captions (the first on a tie)."""
    keys = [_key(c) for c in captions if _key(c)]
    if len(keys) < 2:
        return keys[0] if keys else ""
    grams = [Counter([*w, *zip(w, w[1:], strict=False)]) for w in (k.split() for k in keys)]
    vocab = {g: i for i, g in enumerate({g for c in grams for g in c})}
    m = np.zeros((len(keys), len(vocab)))
    for r, c in enumerate(grams):
        for g, n in c.items():
            m[r, vocab[g]] = n
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sim = m @ m.T
    np.fill_diagonal(sim, 0.0)
    return keys[int(np.argmax(sim.sum(axis=1)))]


def format_scores(rows: dict[str, dict[str, float]]) -> str:
    """A table: one row per captioner, one column per metric (and distinct captions)."""
    metrics = [m for m in METRICS if any(m in r for r in rows.values())]
    width = max(len(n) for n in rows) + 2
    lines = ["".ljust(width) + "".join(f"{m:>9}" for m in metrics) + f"{'distinct':>10}"
             + f"{'words':>7}"]
    for name, r in rows.items():
        cells = "".join(f"{r[m]:9.3f}" if m in r else f"{'-':>9}" for m in metrics)
        lines.append(name.ljust(width) + cells + f"{int(r.get('distinct', 0)):10d}"
                     + f"{int(r.get('vocabulary', 0)):7d}")
    return "\n".join(lines)


def _thumbnail(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def caption_sheet(path: str | os.PathLike, names: Sequence[str], images: np.ndarray,
                  generated: dict[str, Sequence[str]], references: Sequence[Sequence[str]],
                  *, limit: int = 200, title: str = "captions") -> Path:
    """An HTML page (images embedded) with each captioner's caption and the references."""
    rows = []
    for i, name in enumerate(names[:limit]):
        gen = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v[i])}</li>"
                      for k, v in generated.items())
        refs = "".join(f"<li>{html.escape(r)}</li>" for r in references[i])
        rows.append(f"<tr><td><img src='{_thumbnail(images[i])}' width=160><br>"
                    f"{html.escape(name)}</td><td><ul>{gen}</ul></td><td><ul>{refs}</ul></td></tr>")
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;padding:6px;"
            "border-bottom:1px solid #ccc}</style>"
            f"<h1>{html.escape(title)}</h1><table><tr><th>image</th><th>generated</th>"
            f"<th>references</th></tr>{''.join(rows)}</table>")
    return atomic_write_text(path, page)
