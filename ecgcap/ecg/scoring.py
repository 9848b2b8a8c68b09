"""Beat-by-beat comparison of annotation files with the reference (as PhysioNet's bxb does).

Reads annotation files and matches beats; imports neither Keras nor a backend, so that
``python -m ecgcap.score_ecg`` starts in a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ecgcap.ecg import io, processing

# bxb's match window: a test beat within 150 ms of a reference beat is the same beat.
MATCH_WINDOW = 0.150


def match_beats(ref_samples: np.ndarray, test_samples: np.ndarray, window: int
                ) -> list[tuple[int, int]]:
    """Pairs (reference index, test index) of beats within ``window`` samples, nearest first."""
    pairs = []
    j = 0
    for i, s in enumerate(ref_samples):
        while j < len(test_samples) and test_samples[j] < s - window:
            j += 1
        best, best_d = -1, window + 1
        k = j
        while k < len(test_samples) and test_samples[k] <= s + window:
            d = abs(int(test_samples[k]) - int(s))
            if d < best_d:
                best, best_d = k, d
            k += 1
        if best >= 0:
            pairs.append((i, best))
            j = best + 1
    return pairs


def score_annotations(record: str | os.PathLike, annotator: str,
                      ann_dir: str | os.PathLike | None = None, reference: str = "atr"
                      ) -> tuple[list[str], list[str], int, int]:
    """Compare a test annotation file with the reference, beat by beat (as bxb does).

    Returns the AAMI classes of the matched beats (reference, test), and the numbers of
    reference beats missed and of test beats that match no reference beat.
    """
    base = io._record_base(record)
    ref = io.read_annotation(base, reference)
    test_base = base if ann_dir is None else Path(ann_dir) / base.name
    test = io.read_annotation(test_base, annotator)
    ref_cls, test_cls = processing.aami_classes(ref.symbol), processing.aami_classes(test.symbol)
    rs, ts = np.asarray(ref.sample)[ref_cls != ""], np.asarray(test.sample)[test_cls != ""]
    rc, tc = ref_cls[ref_cls != ""], test_cls[test_cls != ""]
    pairs = match_beats(rs, ts, int(round(MATCH_WINDOW * ref.fs)))
    y_ref = [str(rc[i]) for i, _ in pairs]
    y_test = [str(tc[j]) for _, j in pairs]
    return y_ref, y_test, len(rs) - len(pairs), len(ts) - len(pairs)
