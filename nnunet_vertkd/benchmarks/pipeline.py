"""placeholder"""
import os
import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """Path of a console script: next to the running Python first (a venv not on PATH), else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"console script {name!r} not found next to {sys.executable} nor on PATH "
                            f"(is the package installed? pip install -e .)")
