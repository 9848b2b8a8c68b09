"""The runtime every ecgcap command shares: errors, data location, devices, seeds, files, CLI,
and scale-out (``distribute``: the ``--distribute`` strategies; ``shards``: data prepared in
parallel and streamed).

Nothing here imports Keras at module import time, so ``--help`` and argument errors stay fast.
"""

from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_path, atomic_write_json, atomic_write_text
from ecgcap.runtime.paths import find_dataset, make_run_dir, resolve_data_dir

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EcgcapError",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "find_dataset",
    "make_run_dir",
    "resolve_data_dir",
]
