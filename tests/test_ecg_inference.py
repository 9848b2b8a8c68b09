"""Beat positions (annotations or XQRS), WFDB annotation files, and beat matching."""

from __future__ import annotations

import numpy as np
import wfdb

from ecgcap.ecg import io
from ecgcap.ecg.inference import beat_positions, match_beats, score_annotations


def test_xqrs_finds_the_annotated_beats_of_record_100(mitdb_dir):
    rec = io.read_record(mitdb_dir / "100")
    ref, source = beat_positions(rec, mitdb_dir / "100", "atr")
    assert source == "atr" and len(ref) == 2273
    rec.p_signal = rec.p_signal[:360 * 120]  # two minutes keep the test fast
    rec.sig_len = len(rec.p_signal)
    ref = ref[ref < rec.sig_len]
    found, source = beat_positions(rec, None, "xqrs")
    assert source == "xqrs"
    pairs = match_beats(ref, found, window=54)
    assert len(pairs) >= 0.98 * len(ref)
    assert len(found) <= 1.02 * len(ref)


def test_match_beats_pairs_nearest_within_the_window():
    ref = np.array([100, 200, 300, 400])
    test = np.array([95, 205, 260, 420, 800])
    assert match_beats(ref, test, window=10) == [(0, 0), (1, 1)]
    assert match_beats(ref, test, window=40) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_scoring_the_reference_against_itself_is_perfect(mitdb_dir, tmp_path):
    ann = io.read_annotation(mitdb_dir / "100")
    wfdb.wrann("100", "copy", np.asarray(ann.sample), symbol=ann.symbol, fs=360,
               write_dir=str(tmp_path))
    y_ref, y_test, missed, extra = score_annotations(mitdb_dir / "100", "copy", tmp_path)
    assert y_ref == y_test and missed == 0 and extra == 0 and len(y_ref) == 2273


def test_annotations_outside_the_signal_are_skipped_with_a_warning(mitdb_dir):
    import pytest

    rec = io.read_record(mitdb_dir / "100")
    rec.sig_len = 1000
    with pytest.warns(UserWarning, match=r"100\.atr: 2269 beat annotations lie outside the "
                                         r"signal \(samples 0\.\.999; first at sample 1231\); "
                                         "skipped"):
        peaks, source = beat_positions(rec, mitdb_dir / "100", "atr")
    assert source == "atr" and len(peaks) == 4 and peaks.max() < 1000
