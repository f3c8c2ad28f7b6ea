"""One measurement in a fresh Python process, so that its peak memory belongs to it alone.

The parent (``run_child``) passes a JSON spec on the command line, streams the child's output and parses the one
line that starts with ``RESULT_MARKER``. Tasks: "patch" and "export" (``patch_measurement``), "scan"
(``scan_measurement``), "e2e" (``whole_scan``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

RESULT_MARKER = "@@VERTKD_BENCH_RESULT@@"
OUTPUT_TAIL_LINES = 50


def measure(spec: dict) -> dict:
    """Run the measurement ``spec['task']`` in this process."""
    task = spec["task"]
    if task in ("patch", "export"):
        from nnunet_vertkd.benchmarks.patch_measurement import measure_patch
        return measure_patch(spec)
    if task == "scan":
        from nnunet_vertkd.benchmarks.scan_measurement import measure_scan
        return measure_scan(spec)
    if task == "e2e":
        from nnunet_vertkd.benchmarks.whole_scan import child_e2e
        return child_e2e(spec)
    raise ValueError(f"unknown benchmark task {task!r}")


def child_main(spec_json: str) -> None:
    print(RESULT_MARKER + json.dumps(measure(json.loads(spec_json))), flush=True)


def run_child(spec: dict, log=print) -> dict:
    """Run one measurement in a fresh Python process; its output is streamed, the result parsed."""
    env = dict(os.environ)
    env.setdefault("nnUNet_compile", "false")
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    cmd = [sys.executable, "-m", "nnunet_vertkd.benchmarks.child_process", "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    result, tail = None, []
    for line in proc.stdout:
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
        else:
            tail = (tail + [line])[-OUTPUT_TAIL_LINES:]
            log("    " + line.rstrip())
    proc.wait()
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"benchmark child {spec['task']}/{spec.get('net')} failed (exit {proc.returncode}):\n"
                           + "".join(tail))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
    else:
        raise SystemExit("internal to vertkd_benchmark: python -m nnunet_vertkd.benchmarks.child_process --child SPEC")
