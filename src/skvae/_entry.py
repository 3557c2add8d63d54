"""The ``skvae`` console command: the command line, with Ctrl-C answered even while
PyTorch and scikit-learn are still being imported."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Import the command line and run it; 130 without a traceback when interrupted."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("skvae: interrupted", file=sys.stderr, flush=True)
        # at once: a half-finished import can leave the interpreter to die of the signal
        # while shutting down; nothing is being written yet
        os._exit(130)
    return run(argv)
