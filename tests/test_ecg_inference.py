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


def _two_minutes_of_100(mitdb_dir, folder, name: str, leads: list[str]):
    """Two minutes of record 100 (both leads, real beats) written as ``folder/name`` with the
    lead names ``leads``, and its reference beat annotations."""
    rec = io.read_record(mitdb_dir / "100")
    n = 360 * 120
    wfdb.wrsamp(name, fs=rec.fs, units=rec.units, sig_name=leads, p_signal=rec.p_signal[:n],
                fmt=["16", "16"], adc_gain=rec.adc_gain, baseline=rec.baseline,
                write_dir=str(folder))
    ann = io.read_annotation(mitdb_dir / "100")
    inside = np.asarray(ann.sample) < n
    wfdb.wrann(name, "atr", np.asarray(ann.sample)[inside],
               symbol=list(np.asarray(ann.symbol)[inside]), fs=rec.fs, write_dir=str(folder))
    return folder / name


def test_a_record_without_the_models_lead_is_classified_on_its_first_lead(mitdb_dir, tmp_path):
    """Holter files name their leads ECG1, ECG2: the beats are read on ECG1 (here record
    100's MLII, so the labels are those of the same beats read as MLII), with one warning."""
    import json

    from conftest import run_module

    holter = _two_minutes_of_100(mitdb_dir, tmp_path, "holter", ["ECG1", "ECG2"])
    same = _two_minutes_of_100(mitdb_dir, tmp_path, "mlii", ["MLII", "V5"])
    result = run_module("ecgcap.classify_ecg", str(holter), str(same), "--format", "json",
                        "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    ours = [line for line in result.stderr.splitlines() if "warning" in line]
    assert ours == [f"python -m ecgcap.classify_ecg: warning: {holter}: no lead 'MLII' (leads: "
                    "ECG1, ECG2); classified on the first lead, ECG1, which the model was not "
                    "trained on (--lead NAME picks another)"]
    assert f"holter: {len(json.loads(result.stdout)[0]['beats'])} beats, positions from atr, " \
           "lead ECG1" in result.stderr
    first, reference = json.loads(result.stdout)
    assert (first["lead"], reference["lead"]) == ("ECG1", "MLII")
    assert len(first["beats"]) > 140 and first["beats"] == reference["beats"]


def test_lead_picks_a_lead_and_a_missing_named_lead_is_an_error(mitdb_dir, tmp_path):
    import warnings

    import pytest

    from ecgcap.ecg.inference import beat_inputs
    from ecgcap.runtime.errors import EcgcapError

    holter = _two_minutes_of_100(mitdb_dir, tmp_path, "holter", ["ECG1", "ECG2"])
    info = {"kind": "ecg-beats", "beats": {"lead": "MLII"}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name, source, kept, out = beat_inputs(info, str(holter), lead="ECG2")
    assert not [w for w in caught if "lead" in str(w.message)]  # asked for by name: no notice
    assert (name, source, str(out["lead"])) == ("holter", "atr", "ECG2") and len(kept) > 140
    with pytest.raises(EcgcapError, match=r"^--lead: no lead 'MLII' \(leads: ECG1, ECG2\)$"):
        beat_inputs(info, str(holter), lead="MLII")
