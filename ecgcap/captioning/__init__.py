"""The captioning wing: CNN encoder, LSTM decoder, caption data loaders (not built yet).

It imports only :mod:`ecgcap.runtime`, never :mod:`ecgcap.ecg`.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from ecgcap.runtime.errors import EXIT_FAILURE, EcgcapError


def caption_command(args: argparse.Namespace, out: TextIO) -> int:
    """Caption ``args.images`` (the captioner itself is the subject of an open issue)."""
    raise EcgcapError("the captioner is not implemented in this version of ecgcap",
                      input="caption", exit_code=EXIT_FAILURE)
