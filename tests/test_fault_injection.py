"""Fault injection: SIGINT and SIGKILL sent to real ``vertkd_convert_verse -np 2`` and
``vertkd_predict`` processes in the middle of their work.

After each signal: exit status 130 and one line for SIGINT (no traceback); no worker process left running; no
half-written case (every case has all of its files or none); no staging folder or temporary file after SIGINT.
A re-run then gives exactly the files of an uninterrupted run. Marked slow: each run starts Python processes
that import SimpleITK/torch/nnU-Net (about a minute in all on 2 cores).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from helpers import stand_in_model as h
from helpers.verse_files import write_case

pytestmark = pytest.mark.slow

V, S = "Dataset501_VerSeVertebrae", "Dataset502_VerSeSpine"
N_CASES = 8


# ----------------------------------------------------------------------------------------------- helpers
def descendants(pid: int):
    """Pids of all live descendants of ``pid`` (from /proc; zombies excluded)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def snapshot(folder: Path, skip=()):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(s in p.name for s in skip)}


def interrupt(cmd, env, started, sig, timeout_s=120):
    """Start ``cmd``, send ``sig`` once ``started()`` is true; returns (returncode, stderr, worker pids)."""
    # SIGINT back to its default in the child, as in a terminal: a shell without job control (a script's `cmd &`,
    # some CI runners) starts background commands with SIGINT ignored, and Python keeps an ignored SIGINT ignored
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until(lambda: started() or proc.poll() is not None, timeout_s, "the run to get going")
        assert proc.poll() is None, f"the run ended before the signal:\n{proc.stderr.read()}"
        workers = descendants(proc.pid)
        t0 = time.monotonic()
        if sig == signal.SIGINT:  # Ctrl-C in a terminal: the whole foreground process group gets it
            os.killpg(proc.pid, sig)
        else:  # the parent alone is killed
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, workers, stop_s


def assert_no_orphans(workers):
    wait_until(lambda: not any(alive(p) for p in workers), 10, f"worker processes {workers} to die")


# ------------------------------------------------------------------------------------------------ converter
@pytest.fixture
def conversion(tmp_path, nnunet_env):
    root = tmp_path / "verse"
    for i in range(N_CASES):  # big enough (~1 s each) to be interrupted in the middle
        write_case(root, "01_training", f"sub-verse{i + 1:03d}", spacing=(0.7, 0.7, 1.5), shape_kji=(90, 160, 150),
                   labels=(20, 21, 22, 23))
    raw = Path(nnunet_env["nnUNet_raw"])
    cmd = [sys.executable, "-m", "nnunet_vertkd.dataset_conversion.convert_verse", str(root), "-d", "501",
           "-np", "2", "--no-progress"]
    subprocess.run(cmd, env=nnunet_env, check=True, stdout=subprocess.DEVNULL)
    reference = snapshot(raw)
    for name in os.listdir(raw):
        shutil.rmtree(raw / name)
    return cmd, raw, reference


def case_file_counts(raw: Path):
    counts = {}
    for p in raw.rglob("sub-verse*"):
        if p.is_file() and ".vertkd_staging" not in str(p):
            case = p.name.split("_")[0].split(".")[0]
            counts[case] = counts.get(case, 0) + 1
    return counts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_conversion_interrupted_then_rerun(conversion, nnunet_env, sig):
    cmd, raw, reference = conversion
    started = lambda: (raw / V / "imagesTr").is_dir() and any((raw / V / "imagesTr").iterdir())  # noqa: E731
    rc, err, workers, stop_s = interrupt(cmd, nnunet_env, started, sig)
    assert len(workers) >= 2, "expected worker processes"
    assert_no_orphans(workers)
    staging = raw / V / ".vertkd_staging"
    journals = list(staging.glob("*.commit.json")) if staging.exists() else []
    if sig == signal.SIGINT:
        assert rc == 130, err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert "Traceback" not in err and lines[-1].startswith("vertkd_convert_verse: interrupted"), err
        assert stop_s < 30, f"took {stop_s:.1f} s to stop"
        assert not staging.exists()
    else:
        assert rc == -signal.SIGKILL
    counts = case_file_counts(raw)
    assert len(counts) < N_CASES, "the signal came too late to test anything"
    if not journals:  # a journal means a commit was cut short: the next run rolls it back
        assert all(n == 5 for n in counts.values()), counts
    subprocess.run(cmd, env=nnunet_env, check=True, stdout=subprocess.DEVNULL)
    assert snapshot(raw) == reference


# ------------------------------------------------------------------------------------------------ predictor
@pytest.fixture
def prediction(tmp_path):
    ext = tmp_path / "ext"
    model = h.make_standin_vertebra_model(tmp_path / "results", ext)
    from nnunet_vertkd.ext_trainers_path import EXT_TRAINER_DIR
    env = dict(os.environ, nnUNet_extTrainer=os.pathsep.join([str(ext), EXT_TRAINER_DIR]), nnUNet_compile="false",
               OMP_NUM_THREADS="1", nnUNet_results=str(tmp_path / "results"))
    inp = tmp_path / "in"
    inp.mkdir()
    ct, _ = h.phantom(n_blocks=6)
    for i in range(N_CASES):
        sitk.WriteImage(ct, str(inp / f"case{i}_0000.nii.gz"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nnunet_vertkd.inference.cli", "-i", str(inp), "-o", str(out), "-m", model,
           "-device", "cpu", "-npp", "1"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference = snapshot(out, skip=("_record.json",))  # records hold timings
    shutil.rmtree(out)
    return cmd, env, out, reference


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_prediction_interrupted_then_rerun(prediction, sig):
    cmd, env, out, reference = prediction
    started = lambda: out.is_dir() and any(p.name.endswith("_ctd.json") for p in out.iterdir())  # noqa: E731
    rc, err, workers, _ = interrupt(cmd, env, started, sig)
    assert_no_orphans(workers)
    if sig == signal.SIGINT:
        assert rc == 130, err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert "Traceback" not in err and lines[-1].startswith("vertkd_predict: interrupted"), err
        assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    else:
        assert rc == -signal.SIGKILL
    masks = sorted(p.name[:-len(".nii.gz")] for p in out.glob("case*.nii.gz"))
    assert len(masks) < N_CASES, "the signal came too late to test anything"
    for case in masks:  # a mask is renamed into place last: its case is complete
        assert (out / f"{case}_ctd.json").exists() and (out / f"{case}_record.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert snapshot(out, skip=("_record.json",)) == reference
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
