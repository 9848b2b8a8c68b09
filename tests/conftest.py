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
           "flickr8k": "Flickr8k.token.txt"}


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
