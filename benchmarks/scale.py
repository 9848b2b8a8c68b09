"""Scale-out figures on this machine: training throughput with 1 and 2 replicas, and the peak
memory of data preparation for mitdb and for a corpus ten times larger.

    ECGCAP_DATA=../shared/data python benchmarks/scale.py [--skip-memory] [--skip-throughput]

Throughput: the default beat LSTM (bidirectional, conv front end, global batch 256) trained
from shards on 8 DS1 records, under ``--distribute none`` and ``mirrored`` over 2 logical CPU
devices; beats per second over epochs 2-3 (epoch 1 includes tracing). Each configuration runs
in its own process, as the logical devices must be set before TensorFlow starts.

Memory: ``write_beat_shards`` over the 44 mitdb records of the protocol (the paced ones lack
MLII), then over 440 (each record 10 times
under another name), each into a fresh folder, in its own process; the peak resident memory of
the preparing process and of the largest worker process. Streaming keeps both flat; loading the
same beats into memory (``load_beats``) is shown for contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

THROUGHPUT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    def main(replicas, data_dir):
        from ecgcap.runtime.device import configure_device
        from ecgcap.runtime.distribute import Distribution, configure_distribution
        configure_device("cpu")
        dist = configure_distribution("mirrored", replicas) if replicas > 1 else Distribution()
        import keras, numpy as np
        from ecgcap.ecg.databases import get_database
        from ecgcap.ecg.dataset import write_beat_shards
        from ecgcap.ecg.training import (TrainConfig, _weights, beat_stream, build_model,
                                         split_records)
        from ecgcap.runtime.shards import steps_per_epoch
        db = get_database("mitdb")
        config = TrainConfig(train_records=("101", "106", "108", "109", "112", "114", "115",
                                            "116"))
        shards = write_beat_shards(data_dir, db, split_records(db, config)["train"],
                                   config.beats, quiet=True)
        y = np.array([db.classes.index(c) for c in shards.column("label")])
        with dist.scope():
            model = build_model(config, len(db.classes))
            model.get_layer("rr_norm").adapt(shards.column("rr"))
            model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=1.0),
                          loss="sparse_categorical_crossentropy")
        example = shards.take(np.arange(2))
        dist.prepare_fit(model, ({"beat": example["beat"], "rr": example["rr"]}, y[:2],
                                 np.ones(2, "float32")))
        times = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        model.fit(beat_stream(shards, db.classes, _weights(config, y, db.classes), config, dist),
                  epochs=3, steps_per_epoch=steps_per_epoch(len(shards), config.batch_size),
                  callbacks=[Clock()], verbose=0)
        print(json.dumps({"replicas": replicas, "beats": len(shards), "epoch_seconds": times}))

    if __name__ == "__main__":
        main(int(sys.argv[1]), Path(sys.argv[2]))
""")

MEMORY = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path

    def main(data_dir, folder, repeat, mode):
        from ecgcap.ecg.databases import get_database
        from ecgcap.ecg.dataset import load_beats, write_beat_shards
        db = get_database("mitdb")
        records = [*db.split["train"], *db.split["test"]]  # the 44 records with MLII
        t = time.perf_counter()
        if mode == "shards":
            names = [f"{r}-{k}" for k in range(repeat) for r in records]
            shards = write_beat_shards(data_dir, db, records * repeat, names=names,
                                       folder=folder, quiet=True)
            beats = len(shards)
        else:
            beats = len(load_beats(data_dir, db, records * repeat, use_cache=False,
                                   quiet=True)["label"])
        seconds = time.perf_counter() - t
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"records": len(records) * repeat, "beats": beats, "mode": mode,
                          "seconds": seconds, "peak_mb": own, "worker_peak_mb": workers}))

    if __name__ == "__main__":
        main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
""")


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.py"
        path.write_text(script)
        result = subprocess.run([sys.executable, str(path), *args], capture_output=True,
                                text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from ecgcap.runtime.paths import find_dataset

    mitdb = find_dataset("mitdb", "RECORDS")
    env = {"CUDA_VISIBLE_DEVICES": "-1", "KERAS_BACKEND": "tensorflow"}
    if not args.skip_throughput:
        print("training throughput, default beat LSTM, global batch 256, tensorflow CPU")
        print(f"{'replicas':>8}  {'beats':>6}  {'s/epoch (2-3)':>13}  {'beats/s':>8}")
        for replicas in (1, 2):
            r = _run(THROUGHPUT, str(replicas), str(mitdb), env=env)
            per_epoch = sum(r["epoch_seconds"][1:]) / len(r["epoch_seconds"][1:])
            print(f"{replicas:>8}  {r['beats']:>6}  {per_epoch:>13.1f}  "
                  f"{r['beats'] / per_epoch:>8.0f}", flush=True)
    if not args.skip_memory:
        print("\ndata preparation, peak resident memory (MB)")
        print(f"{'records':>7}  {'beats':>7}  {'how':<22}  {'seconds':>7}  {'main':>6}  "
              f"{'worker':>6}")
        rows = [(1, "shards"), (10, "shards"), (1, "memory"), (10, "memory")]
        with tempfile.TemporaryDirectory() as tmp:
            for repeat, mode in rows:
                folder = Path(tmp) / f"shards-{repeat}"
                r = _run(MEMORY, str(mitdb), str(folder), str(repeat), mode, env=env)
                how = "write_beat_shards" if mode == "shards" else "load_beats (in memory)"
                print(f"{r['records']:>7}  {r['beats']:>7}  {how:<22}  {r['seconds']:>7.0f}  "
                      f"{r['peak_mb']:>6.0f}  {r['worker_peak_mb']:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
