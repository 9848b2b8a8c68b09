"""Every command: --help, and bad usage as one clear line with the documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import run_module

COMMANDS = ["ecgcap.train_ecg", "ecgcap.caption", "ecgcap.train_caption",
            "ecgcap.evaluate_caption"]


def _our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("python -m ecgcap.")]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_prints_usage(module):
    result = run_module(module, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python -m {module}")
    assert "--device" in result.stdout and "--seed" in result.stdout


@pytest.mark.parametrize("module", COMMANDS)
def test_unknown_option_is_one_line_exit_2(module):
    result = run_module(module, "x.jpg", "--no-such-option") if module == "ecgcap.caption" \
        else run_module(module, "--no-such-option")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m {module}: error: unrecognized arguments: --no-such-option (see --help)"]


@pytest.mark.parametrize("module, option, value", [
    ("ecgcap.train_ecg", "--units", "0"), ("ecgcap.train_ecg", "--batch-size", "-8"),
    ("ecgcap.train_ecg", "--epochs", "0"), ("ecgcap.train_ecg", "--learning-rate", "0"),
    ("ecgcap.train_caption", "--image-size", "0"), ("ecgcap.train_caption", "--units", "-1"),
    ("ecgcap.caption", "--beam", "-1"), ("ecgcap.evaluate_caption", "--beam", "0"),
])
def test_zero_or_negative_sizes_are_one_line_exit_2(module, option, value, tmp_path):
    result = subprocess.run([sys.executable, "-m", module, option, value], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"python -m {module}: error: argument {option}: '{value}' must be")
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_data_dir_is_one_line_exit_2(tmp_path):
    result = run_module("ecgcap.train_ecg", "--data-dir", str(tmp_path / "nowhere"),
                        "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "-q")
    assert result.returncode == 2, result.stderr
    lines = _our_lines(result.stderr)
    assert lines == [f"python -m ecgcap.train_ecg: error: --data-dir {tmp_path / 'nowhere'}: "
                     "no such directory"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_gpu_on_a_cpu_only_machine_is_one_line_exit_2(tmp_path):
    result = run_module("ecgcap.train_ecg", "--device", "gpu", "--data-dir", str(tmp_path))
    if result.returncode == 0 or "GPU" not in result.stderr:
        pytest.skip("this machine has a GPU")
    assert result.returncode == 2
    lines = _our_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        "python -m ecgcap.train_ecg: error: --device gpu: no GPU is visible")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_module("ecgcap.train_ecg", "--data-dir", str(tmp_path / "nowhere"), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_offline_download_names_data_dir(tmp_path):
    env = {"ECGCAP_DATA": "", "ECGCAP_PHYSIONET_URL": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "ecgcap.train_ecg", "--device", "cpu", "-q"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 2
    lines = _our_lines(result.stderr)
    assert len(lines) == 1 and "cannot reach" in lines[0] and "--data-dir" in lines[0]
    assert not list((tmp_path / "data").rglob("*.dat"))
