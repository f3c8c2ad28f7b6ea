"""Cost of one network on one patch, in a fresh process: parameters, FLOPs, time per forward pass, peak memory.

Backends other than plain torch (``nnunet_vertkd.inference.backends``) are exported in a process of their own
first (task "export", cached), so that the timed process's memory is the runtime's alone.
"""
from __future__ import annotations

import time
from typing import List

from nnunet_vertkd.benchmarks.measured_networks import build_net
from nnunet_vertkd.benchmarks.process_resources import memory_fields, rss_now_mb, spread

CHANNELS_LAST_SUFFIX = "_channels_last"


def sync(device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock time covers it."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def backend_runner(net, spec: dict, device, input_shape):
    """The backend's runner (numpy in, numpy out) or None for plain torch."""
    backend = spec.get("backend") or "torch"
    if backend == "torch" and not spec.get("channels_last"):
        return None
    from nnunet_vertkd.inference import backends
    return backends.make_runner(net, backend, device, int(spec["threads"]), tuple(input_shape), None,
                                f"bench_{spec['net']}")


def time_forward_passes(forward, x, device, warmup: int, runs: int):
    """Seconds of each of ``runs`` forward passes after ``warmup`` untimed ones; and the output's shape."""
    import torch
    times: List[float] = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync(device)
            t = time.perf_counter()
            out = forward(x)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return times, list(out.shape)


def count_flops(net, x) -> int:
    """FLOPs of one forward pass (``FlopCounterMode``: convolutions and matrix products, 1 multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    return int(counter.get_total_flops())


def measure_patch(spec: dict) -> dict:
    """Parameters, FLOPs, time and peak memory of ``spec['net']`` on one ``spec['patch']``³ patch; with task
    "export" only the backend's export (cached for the timing process)."""
    import torch
    from nnunet_vertkd.trainers.network import count_parameters

    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net, c_in = build_net(spec["net"], spec.get("plans"))
    params = count_parameters(net)
    net = net.eval().to(device)
    p = int(spec["patch"])
    x = torch.randn(1, c_in, p, p, p, device=device)
    backend = spec.get("backend") or "torch"
    runner = backend_runner(net, spec, device, x.shape)
    if spec.get("task") == "export":
        return {"net": spec["net"], "backend": backend}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_now_mb()
    forward, inputs = (net, x) if runner is None else (runner, x.cpu().numpy())
    times, out_shape = time_forward_passes(forward, inputs, device, int(spec["warmup"]), int(spec["runs"]))
    res = {"net": spec["net"], "parameters": params, "flops": count_flops(net, x), "patch": [p, p, p],
           "input_channels": c_in, "output_shape": out_shape, "seconds_per_patch": spread(times),
           "device": str(device), "threads": torch.get_num_threads(),
           "backend": backend + (CHANNELS_LAST_SUFFIX if spec.get("channels_last") else "")}
    if runner is not None:  # the backend's numbers against torch (probabilities)
        from nnunet_vertkd.inference.backends import compare_to_torch
        res["max_abs_probability_difference_to_torch"] = compare_to_torch(net, runner, tuple(x.shape))
    res.update(memory_fields(device, rss_before))
    return res
