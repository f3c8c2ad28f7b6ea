"""What every ``vertkd_*`` command shares: option spellings and the reporting of input errors.

Spelling: nnU-Net's where nnU-Net has the same option (``nnUNetv2_predict``, ``nnUNetv2_plan_and_preprocess``);
old spellings of this plugin stay accepted as aliases.

=====================  =========================================  =============================================
option                 meaning                                    aliases kept
=====================  =========================================  =============================================
``-device``            cpu / cuda (/ mps where the command can)    ``--device``
``-np``                worker processes                           ``--num-processes``
``--threads``          torch / OpenMP threads per process         ``--num-threads``, ``-npp`` (``vertkd_predict``;
                                                                  deprecated: nnU-Net's -npp = processes)
``--disable_tta``      no left-right mirroring at test time       ``--disable-tta``
``--disable_progress_bar``  no progress bar                       ``--no-progress``
``--overwrite``        replace existing outputs
``--verbose``          tracebacks of failed cases
=====================  =========================================  =============================================

Exit status: 0 success, 1 a case failed while running, 2 bad input or usage (``prog: error: message`` on stderr,
as argparse does), 130 interrupted (``nnunet_vertkd.interrupts``).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

from nnunet_vertkd.interrupts import INTERRUPTED_EXIT

INPUT_ERROR_EXIT = 2
CASE_FAILED_EXIT = 1


class InputError(Exception):
    """Bad input or usage found after parsing (a missing file, a folder that is not a model ...). The message names
    the file and the problem; ``command`` turns it into ``prog: error: message`` and exit status 2."""


def command(prog: str, interrupted: str = "nothing half-written was kept"):
    """Decorator for a command's ``main(argv=None) -> int``: ``InputError`` -> ``prog: error: …`` and exit 2,
    Ctrl-C -> one line and 130."""
    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except InputError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return INPUT_ERROR_EXIT
            except KeyboardInterrupt:
                print(f"\n{prog}: interrupted; {interrupted}", file=sys.stderr)
                return INTERRUPTED_EXIT
        return wrapper
    return decorate


def add_device_option(p: argparse.ArgumentParser, default: str = "cpu", choices=("cpu", "cuda")) -> None:
    p.add_argument("-device", "--device", dest="device", default=default, choices=list(choices),
                   help="device (default: %(default)s)")


def add_processes_option(p: argparse.ArgumentParser, default: int = 1, what: str = "worker processes") -> None:
    p.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=default,
                   help=f"{what} (default: %(default)s)")


def add_threads_option(p: argparse.ArgumentParser, default=None, extra_aliases=()) -> argparse.Action:
    """``--threads`` (plus a command's old spellings); returns the action (e.g. to name deprecated aliases in its
    help)."""
    return p.add_argument("--threads", *extra_aliases, dest="threads", type=int, default=default,
                   help="torch/OpenMP threads per process (default: %s)"
                        % ("all cores available" if default is None else "%(default)s"))


def add_tta_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disable_tta", "--disable-tta", dest="disable_tta", action="store_true",
                   help="no left-right mirroring at test time (faster, usually slightly less accurate)")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disable_progress_bar", "--no-progress", dest="disable_progress_bar", action="store_true",
                   help="no progress bar (e.g. for log files)")


def add_overwrite_option(p: argparse.ArgumentParser, what: str = "replace existing outputs") -> None:
    p.add_argument("--overwrite", action="store_true", help=what)


def add_verbose_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failed cases")


def apply_threads(threads) -> None:
    """Limit torch and OpenMP to ``threads`` (None: leave the defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)
