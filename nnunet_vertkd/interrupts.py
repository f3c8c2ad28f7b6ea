"""Ctrl-C and killed parents: one line and exit status 130 instead of a traceback; workers that die with
their parent.

* ``exit_130_on_interrupt(prog, what)``: decorator for a command's ``main``; a ``KeyboardInterrupt`` becomes
  one line on stderr (``prog: interrupted; what``) and the return value ``INTERRUPTED_EXIT`` (130 = 128 +
  SIGINT, the shell convention).
* ``worker_initializer()``: for pool worker processes. The worker ignores SIGINT (Ctrl-C reaches the whole
  process group: the parent alone decides, and stops its workers) and, on Linux, asks the kernel to kill it
  when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so killing the parent, even with SIGKILL,
  leaves no worker running (and writing). Elsewhere a watchdog thread exits the worker when its parent is
  gone.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

INTERRUPTED_EXIT = 130
_PR_SET_PDEATHSIG = 1


def exit_130_on_interrupt(prog: str, what: str):
    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"\n{prog}: interrupted; {what}", file=sys.stderr)
                return INTERRUPTED_EXIT
        return wrapper
    return decorate


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_initializer(parent_pid: int) -> None:
    """Initializer of pool workers (pass ``os.getpid()`` of the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
