"""Speed of the ECG wing on this machine: data preparation, training and inference.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_speed.py

Prints the time to prepare every non-paced mitdb record (read, filter, resample, segment),
uncached and cached; training throughput (beats/s) of the LSTM and the SimpleRNN over one epoch
of DS1; inference throughput (beats/s); and the share of a training run spent preparing data.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    os.environ["ECGCAP_CACHE"] = tempfile.mkdtemp(prefix="ecgcap-speed-")
    import keras

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, MITDB_DS2, get_database
    from ecgcap.ecg.dataset import load_beats
    from ecgcap.ecg.training import TrainConfig, build_model
    from ecgcap.runtime.device import configure_device

    print(configure_device("cpu"))
    db = get_database("mitdb")
    db_dir = locate_or_download("mitdb")
    records = list(MITDB_DS1 + MITDB_DS2)
    t = time.perf_counter()
    data = load_beats(db_dir, db, records, quiet=True)
    prep = time.perf_counter() - t
    t = time.perf_counter()
    load_beats(db_dir, db, records, quiet=True)
    cached = time.perf_counter() - t
    n = len(data["label"])
    print(f"data preparation, {len(records)} records, {n} beats: {prep:.1f} s uncached, "
          f"{cached:.2f} s cached")

    train = np.isin(data["record"], MITDB_DS1)
    x = {"beat": data["beat"][train], "rr": data["rr"][train]}
    y = np.zeros(int(train.sum()), dtype=np.int64)
    print(f"\n{'model':10}{'train beats/s':>15}{'infer beats/s':>15}{'prep share':>12}")
    for cell in ("lstm", "simplernn"):
        keras.utils.set_random_seed(0)
        model = build_model(TrainConfig(model=cell), 5)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=256, epochs=1, steps_per_epoch=5, verbose=0)  # warm up
        t = time.perf_counter()
        model.fit(x, y, batch_size=256, epochs=1, verbose=0)
        train_rate = len(y) / (time.perf_counter() - t)
        model.predict(x, batch_size=1024, verbose=0, steps=2)
        t = time.perf_counter()
        model.predict(x, batch_size=1024, verbose=0)
        infer_rate = len(y) / (time.perf_counter() - t)
        epoch = len(y) / train_rate
        share = prep / (prep + 15 * epoch)  # a typical run: ~15 epochs
        print(f"{cell:10}{train_rate:15.0f}{infer_rate:15.0f}{100 * share:11.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
