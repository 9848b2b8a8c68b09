"""How quickly and quietly the commands answer: wall time, peak memory and stderr lines of
``--help``, input errors, and one real job each, every command in a fresh process.

    ECGCAP_DATA=../shared/data python benchmarks/cli_startup.py [--repo DIR] [--repeats 3]

``--repo DIR`` runs another checkout's code (``PYTHONPATH=DIR``), e.g. a ``git worktree`` of an
older commit, to print the "before" table beside this one. Bars (issue 31, 2 cores): every
``--help`` under 1 s; ``caption one.jpg`` under 3 s; no TensorFlow / absl / CUDA line on stderr;
an error is one line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# runs one command and prints its peak memory: a process's RUSAGE_CHILDREN covers its child
_MEASURE = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:])\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(f'{r.returncode} {peak}', file=open(sys.argv[0] + '.out', 'w'))\n")
FRAMEWORK = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "I0000 ", "W0000 ", "E0000 ")


def cases(data: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    photo = data / "flickr8k" / "images" / "2052953131_30834196fb.jpg"
    record = data / "mitdb" / "233"
    (scratch / "100.hea").write_text("")  # an empty header
    return [
        ("caption --help", ["ecgcap.caption", "--help"]),
        ("classify_ecg --help", ["ecgcap.classify_ecg", "--help"]),
        ("train_ecg --help", ["ecgcap.train_ecg", "--help"]),
        ("train_caption --help", ["ecgcap.train_caption", "--help"]),
        ("score_ecg --help", ["ecgcap.score_ecg", "--help"]),
        ("caption missing.jpg", ["ecgcap.caption", str(scratch / "missing.jpg")]),
        ("classify_ecg (0-byte .hea)", ["ecgcap.classify_ecg", str(scratch / "100")]),
        ("train_ecg --device gpu --db mitdb", ["ecgcap.train_ecg", "--device", "gpu", "--db",
                                               "mitdb", "--runs-dir", str(scratch / "runs")]),
        ("caption one.jpg", ["ecgcap.caption", str(photo)]),
        ("caption one.jpg --runtime keras", ["ecgcap.caption", str(photo), "--runtime",
                                             "keras"]),
        ("classify_ecg mitdb/233", ["ecgcap.classify_ecg", str(record), "--format", "csv"]),
        ("score_ecg mitdb/233 (atr against atr)", ["ecgcap.score_ecg", str(record),
                                                    "--annotator", "atr"]),
    ]


def measure(module_args: list[str], env: dict[str, str], scratch: Path
            ) -> tuple[float, float, int, int, bool]:
    """(wall seconds, peak MB, stderr lines, exit code, framework lines seen)."""
    import time

    script = scratch / "measure.py"
    script.write_text(_MEASURE)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), sys.executable, "-m", *module_args],
                          capture_output=True, text=True, env=env, cwd=scratch)
    wall = time.perf_counter() - start
    code, peak_kb = (Path(str(script) + ".out").read_text().split())
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    noisy = any(marker in line for line in lines for marker in FRAMEWORK)
    return wall, int(peak_kb) / 1024, len(lines), int(code), noisy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                        help="checkout whose code runs (default: this one)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--data-dir", default=os.environ.get("ECGCAP_DATA", "../shared/data"))
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    env = {**os.environ, "PYTHONPATH": str(Path(args.repo).resolve()),
           "ECGCAP_DATA": str(data), "CUDA_VISIBLE_DEVICES": os.environ.get(
               "CUDA_VISIBLE_DEVICES", "")}
    env.pop("ECGCAP_DEBUG", None)
    print(f"code: {args.repo}; {os.cpu_count()} CPUs; median of {args.repeats} runs")
    print(f"{'command':38}{'wall s':>8}{'peak MB':>9}{'stderr lines':>14}{'exit':>6}  "
          "framework lines")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, module_args in cases(data, scratch):
            runs = [measure(module_args, env, scratch) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            lines, code, noisy = runs[-1][2], runs[-1][3], any(r[4] for r in runs)
            print(f"{name:38}{wall:8.2f}{peak:9.0f}{lines:14d}{code:6d}  "
                  f"{'yes' if noisy else 'no'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
