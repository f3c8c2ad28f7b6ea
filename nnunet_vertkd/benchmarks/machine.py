"""Description of the machine a benchmark ran on: CPU model, cores, memory, GPU and library versions."""
from __future__ import annotations

import os
import platform
from typing import Optional

KIB_PER_GB = 1024 ** 2
#: optional inference runtimes whose versions are recorded when installed
OPTIONAL_RUNTIMES = ("openvino", "onnxruntime", "nnunetv2")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def cores_available() -> int:
    """CPU cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / KIB_PER_GB, 1)
    except OSError:
        pass
    return None


def package_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict:
    """Everything ``describe_machine`` prints, as a dict (recorded in the benchmarks' JSON)."""
    import torch
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cores_available": cores_available(),
            "memory_gb": memory_gb(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(), "gpu": None}
    for name in OPTIONAL_RUNTIMES:
        v = package_version(name)
        if v is not None:
            info[name] = v
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def describe_machine(info: dict) -> str:
    """One line for a report: CPU, cores, memory, torch / nnU-Net / OpenVINO versions, GPU, load average."""
    s = (f"CPU {info.get('cpu')} ({info.get('cores_available')} cores available of {info.get('cpu_count')}), "
         f"{info.get('memory_gb')} GB RAM, torch {info.get('torch')}, nnU-Net {info.get('nnunetv2', '?')}, ")
    if info.get("openvino"):
        s += f"OpenVINO {info['openvino']}, "
    s += f"Python {info.get('python')}, GPU: {info.get('gpu') or 'none'}"
    if info.get("load_average") is not None:
        s += f"; load average at start {info['load_average']}"
    return s
