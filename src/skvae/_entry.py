"""The ``skvae`` console command: the command line, with Ctrl-C answered even while
PyTorch and scikit-learn are still being imported."""

from __future__ import annotations

import os
import signal
import sys
import threading


def _exit_interrupted(signum: int, frame: object) -> None:
    print("skvae: interrupted", file=sys.stderr, flush=True)
    # at once: nothing is being written yet, and a half-finished import can leave the
    # interpreter to die of the signal while shutting down
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    """Import the command line and run it; 130 without a traceback when interrupted."""
    # While the imports run, Ctrl-C exits from the signal handler itself. Raising
    # KeyboardInterrupt is not enough: an extension module whose initialisation is
    # interrupted turns it into ``ImportError: initialization failed``.
    own_handler = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if own_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        from .cli import main as run
    except KeyboardInterrupt:  # a handler other than Python's default raised it
        _exit_interrupted(signal.SIGINT, None)
    finally:
        if own_handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return run(argv)
