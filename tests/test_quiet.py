"""Commands are quiet: no TensorFlow / absl / CUDA line reaches the terminal, an error is one
line, ``--help`` never imports TensorFlow, and ``--debug`` lets everything through."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import run_module, run_watching_imports

COMMANDS = ["train_ecg", "classify_ecg", "score_ecg", "diagnose", "caption", "train_caption",
            "evaluate_caption", "export"]
TF_LINES = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "I0000", "W0000", "E0000",
            "cpu_feature_guard")

SAMPLES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796541508.327693   27687 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796541508.327989   27687 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796541513.786454   27687 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]


def test_framework_lines_are_noise_and_real_errors_are_not():
    from ecgcap.runtime.quiet import is_noise

    assert all(is_noise(line) for line in SAMPLES)
    assert not is_noise("Traceback (most recent call last):")
    assert not is_noise("python -m ecgcap.caption: error: x.jpg: no such image file")
    assert not is_noise("E0000 00:00:1796541513.786454   27687 op_kernel.cc:1857] "
                        "OP_REQUIRES failed: out of memory")


def test_framework_quiet_drops_noise_keeps_the_rest_and_debug_shows_all():
    code = (
        "import os, sys\n"
        "from ecgcap.runtime.quiet import framework_quiet\n"
        "with framework_quiet():\n"
        f"    os.write(2, {SAMPLES[1]!r}.encode() + b'\\n')\n"
        "    os.write(2, b'a real problem\\n')\n"
        "    print('from python', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "ECGCAP_DEBUG": "0"})
    assert quiet.stderr.splitlines() == ["a real problem", "from python", "after"]
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "ECGCAP_DEBUG": "1"})
    assert loud.stderr.splitlines()[0] == SAMPLES[1]


def test_overlapping_blocks_in_two_threads_restore_stderr():
    # the first block closes while the second is still open: stderr must end up restored
    code = (
        "import os, sys, threading\n"
        "from ecgcap.runtime.quiet import framework_quiet\n"
        "opened, entered, closed = threading.Event(), threading.Event(), threading.Event()\n"
        "def first():\n"
        "    with framework_quiet():\n"
        "        opened.set(); entered.wait()\n"
        "        os.write(2, b'kept from the first\\n')\n"
        "    closed.set()\n"
        "def second():\n"
        "    opened.wait()\n"
        "    with framework_quiet():\n"
        "        entered.set(); closed.wait()\n"
        f"        os.write(2, {SAMPLES[1]!r}.encode() + b'\\n')\n"
        "threads = [threading.Thread(target=first), threading.Thread(target=second)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "os.write(2, b'after\\n')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "ECGCAP_DEBUG": "0"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["kept from the first", "after"]


def test_a_find_spec_check_leaves_the_import_hook_in_place():
    code = ("import importlib.util, sys\n"
            "import ecgcap\n"
            "from ecgcap.runtime.quiet import _QuietImport\n"
            "assert importlib.util.find_spec('tensorflow') is not None\n"
            "assert 'tensorflow' not in sys.modules\n"
            "print(any(isinstance(f, _QuietImport) for f in sys.meta_path))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_importing_ecgcap_then_tensorflow_prints_nothing():
    code = ("import ecgcap.captioning.models, ecgcap.ecg.models\n"
            "from ecgcap.runtime.device import list_gpus\n"
            "list_gpus()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if k not in ("TF_CPP_MIN_LOG_LEVEL", "ECGCAP_DEBUG")})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


RETRACE = """
import ecgcap
import tensorflow as tf
for n in range(8):  # a new function each time: tf.function's retracing warning
    tf.function(lambda x: x + 1)(tf.constant([1.0] * (n + 1)))
"""


@pytest.mark.parametrize("debug", ["0", "1"])
def test_tensorflow_python_warnings_only_with_debug(debug):
    result = subprocess.run([sys.executable, "-c", RETRACE], capture_output=True, text=True,
                            env={**os.environ, "ECGCAP_DEBUG": debug})
    assert result.returncode == 0, result.stderr
    assert ("WARNING:tensorflow" in result.stderr) == (debug == "1"), result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_and_usage_errors_never_import_tensorflow(command):
    module = f"ecgcap.{command}"
    shown = run_watching_imports(module, "--help", timeout=120)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout.strip().endswith("no tensorflow")
    assert "(default: None)" not in shown.stdout
    bad = run_watching_imports(module, "--no-such-option", timeout=120)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert bad.stdout.strip() == "no tensorflow"


def test_gpu_refusal_is_one_quiet_line(tmp_path):
    result = run_module("ecgcap.train_ecg", "--device", "gpu", "--db", "mitdb",
                        "--runs-dir", str(tmp_path),
                        env={"CUDA_VISIBLE_DEVICES": "-1", "ECGCAP_DEBUG": "0"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpu" in lines[0].lower(), result.stderr
    assert not any(marker in result.stderr for marker in TF_LINES if marker != "cuda")


def test_debug_lets_the_framework_lines_through(tmp_path):
    result = run_module("ecgcap.train_ecg", "--device", "gpu", "--db", "mitdb", "--debug",
                        "--runs-dir", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "absl::InitializeLog" in result.stderr or "I0000" in result.stderr, result.stderr
