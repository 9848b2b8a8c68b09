"""Shared fixtures: real datasets found through ecgcap's own data-location setting.

``ECGCAP_DATA`` (or ``data/``) is searched exactly as the commands search it. A missing dataset
skips the tests that need it, with the reason; with ``ECGCAP_REQUIRE_DATA=1`` (as in CI) it
fails them instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.paths import find_dataset

MARKERS = {"mitdb": "RECORDS", "cinc2017": "REFERENCE.csv", "rsicd": "captions_test.json",
           "flickr8k": "Flickr8k.token.txt", "flickr30k": "captions.token",
           "pretrained": "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"}


def real_dataset(name: str) -> Path:
    """The folder of real dataset ``name``, or skip (fail under ECGCAP_REQUIRE_DATA=1)."""
    try:
        return find_dataset(name, MARKERS[name])
    except EcgcapError as exc:
        reason = f"real {name} data not found ({exc}); set ECGCAP_DATA to the data root"
        if os.environ.get("ECGCAP_REQUIRE_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    return real_dataset("mitdb")


@pytest.fixture(scope="session")
def cinc2017_dir() -> Path:
    return real_dataset("cinc2017")


@pytest.fixture(scope="session")
def rsicd_dir() -> Path:
    return real_dataset("rsicd")


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    return real_dataset("flickr8k")


@pytest.fixture(scope="session")
def flickr30k_dir() -> Path:
    return real_dataset("flickr30k")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test session caches prepared records in its own folder, never in the project."""
    monkeypatch.setenv("ECGCAP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_module(module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``python -m module args`` in a subprocess; return the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


_WATCH = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("tensorflow imported" if "tensorflow" in sys.modules else "no tensorflow")
sys.exit(code)
"""


def run_watching_imports(module: str, *args: str, timeout: int = 300):
    """``python -m module args`` in a subprocess that then prints on stdout whether TensorFlow
    was imported (``tensorflow imported`` / ``no tensorflow``)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", _WATCH, module, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def run_on_backend(script: str, backend: str, tmp_path: Path, *args: str):
    """Run ``script`` in its own process with ``KERAS_BACKEND=backend`` (CPU only) and check it
    ends by printing ``ok BACKEND``; skip when the backend is not installed."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    path = tmp_path / "backend_script.py"
    path.write_text(script)
    result = subprocess.run([sys.executable, str(path), backend, *args], capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "KERAS_BACKEND": backend,
                                 "CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"ok {backend}")
