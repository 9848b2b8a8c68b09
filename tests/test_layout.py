"""The architecture rules: the two wings share only the runtime; importing ecgcap is light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ecgcap

PACKAGE = Path(ecgcap.__file__).parent


def _imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_wings_do_not_import_each_other():
    assert not {m for m in _imports(PACKAGE / "ecg") if m.startswith("ecgcap.captioning")}
    assert not {m for m in _imports(PACKAGE / "captioning") if m.startswith("ecgcap.ecg")}
    assert not {m for m in _imports(PACKAGE / "runtime")
                if m.startswith(("ecgcap.ecg", "ecgcap.captioning"))}


def test_importing_ecgcap_and_parsing_options_do_not_import_keras():
    code = ("import sys, ecgcap, ecgcap.train_ecg, ecgcap.caption, ecgcap.classify_ecg, "
            "ecgcap.train_caption, ecgcap.evaluate_caption; ecgcap.train_ecg.build_parser(); "
            "ecgcap.train_caption.build_parser(); ecgcap.caption.build_parser(); "
            "print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_preparation_workers_do_not_import_a_backend():
    """Shards are prepared in spawned processes that import ecgcap.ecg.dataset; it must not
    pull in keras or tensorflow (seconds and hundreds of MB per process)."""
    code = ("import sys, ecgcap.ecg.dataset, ecgcap.runtime.shards; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
