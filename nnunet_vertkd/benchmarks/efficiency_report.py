"""The efficiency benchmark's report: the Markdown of ``OUT/efficiency.md`` and the table printed at the end."""
from __future__ import annotations

from typing import List

from nnunet_vertkd.benchmarks.machine import describe_machine
from nnunet_vertkd.benchmarks.measured_networks import NET_TITLES, NETS

GIGA = 1e9


def fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def fmt_times(sp: dict, nd=3) -> str:
    if not sp:
        return "–"
    if sp.get("n", 0) <= 1:
        return f"{sp['median']:.{nd}f}"
    return f"{sp['median']:.{nd}f} [{sp['min']:.{nd}f}–{sp['max']:.{nd}f}]"


def format_markdown(report: dict) -> str:
    a = report["settings"]
    lines = [f"# Efficiency benchmark ({a['device']}, patch {a['patch']}³)", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {describe_machine(report['machine'])}.", ""]
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    lines += [f"Date: {report['date']}; {a['runs']} timed runs per patch after {a['warmup']} warm-up run(s); "
              f"{a['threads']} torch thread(s); times are median [min–max] in seconds.", "",
              "| network | parameters | GFLOPs / patch | s / patch | peak memory (MB) | memory increase (MB) |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += format_patch_rows(report) + format_backends(report) + format_scan(report)
    if report.get("e2e"):
        lines += format_e2e(report)
    lines += ["", "Columns: see docs/benchmarks.md. Networks are untrained (random weights); the iterative loop's "
                  "network calls come from the oracle mode described there.", ""]
    return "\n".join(lines)


def format_patch_rows(report: dict) -> List[str]:
    lines = []
    for name in NETS:
        r = report["patch"].get(name)
        if not r:
            continue
        lines.append(f"| {NET_TITLES[name]} | {r['parameters']:,} | {r['flops'] / GIGA:.2f} | "
                     f"{fmt_times(r['seconds_per_patch'])} | {fmt(r['peak_memory_mb'], 0)} | "
                     f"{fmt(r.get('memory_increase_mb'), 0)} |")
    return lines


def format_backends(report: dict) -> List[str]:
    lines = []
    if report.get("patch_backends"):
        lines += ["", "### Time per patch by inference backend", "",
                  "| network | backend | s / patch | × vs torch | peak memory (MB) | max abs diff of probabilities vs torch |",
                  "|---|---|---:|---:|---:|---:|"]
        for name in NETS:
            rows = report["patch_backends"].get(name) or {}
            t_torch = (rows.get("torch") or {}).get("seconds_per_patch", {}).get("median")
            for backend, r in rows.items():
                t = r["seconds_per_patch"]["median"]
                lines.append(f"| {NET_TITLES[name]} | {backend} | {fmt_times(r['seconds_per_patch'])} | "
                             f"{fmt(t_torch / t if t_torch else None, 2)} | {fmt(r['peak_memory_mb'], 0)} | "
                             f"{fmt(r.get('max_abs_probability_difference_to_torch'), 7) if backend != 'torch' else '–'} |")
    return lines


def _scan_method_and_notes(name: str, r: dict):
    if name.startswith("nnunet"):
        return ("nnU-Net sliding window (nnUNetPredictor, planned net)",
                f"tile {r.get('tiles_patch_size')}, step {r.get('tile_step_size', 0.5)}, Gaussian, "
                f"mirroring {'on' if r.get('mirroring') else 'off'}, backend {r.get('backend', 'torch')}"
                + ("; **estimated**: mirroring-off time + 7 × its network seconds, not run" if r.get("estimated") else ""))
    return (f"iterative loop, {name}",
            f"{r.get('loop_mode')}; {r.get('n_vertebrae_found')} vertebrae, stop: {r.get('stop_reason')}; "
            f"preprocessing {r.get('preprocess_seconds')} s; backend {r.get('backend', 'torch')}")


def format_scan(report: dict) -> List[str]:
    lines = []
    if report.get("scan"):
        s = report["scan_info"]
        lines += ["", f"## Whole scan: {s['original']['file']} (size {s['original']['size']}, spacing "
                      f"{s['original']['spacing_mm']} mm, {s['original']['orientation']}; "
                      f"{s.get('n_vertebrae') if s.get('n_vertebrae') is not None else '?'} annotated vertebrae), "
                      f"resampled to {s['spacing_mm']} mm LPI: {s['size_1mm']} voxels", "",
                  "| method | network calls | s / scan | peak memory (MB) | memory increase (MB) | CO₂ (g) | notes |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, r in report["scan"].items():
            if not r:
                continue
            method, notes = _scan_method_and_notes(name, r)
            co2 = r.get("co2_kg_per_scan")
            lines.append(f"| {method} | {r.get('n_network_calls')} | {fmt_times(r['seconds_per_scan'], 2)} | "
                         f"{fmt(r['peak_memory_mb'], 0)} | {fmt(r.get('memory_increase_mb'), 0)} | "
                         f"{fmt(co2 * 1000 if co2 is not None else None, 3)} | {notes} |")
        if not report.get("codecarbon"):
            lines += ["", "CO₂: codecarbon is not installed (`pip install codecarbon` to measure it)."]
    return lines


def format_e2e(report: dict) -> List[str]:
    info = report.get("e2e_info", {})
    nn = {k: v for k, v in report.get("scan", {}).items() if k.startswith("nnunet")}
    ref = {k: v["seconds_per_scan"]["median"] for k, v in nn.items()}
    lines = ["", f"## End to end with vertkd_predict's predictor ({info.get('scan')}; spine model: "
                 f"{info.get('spine_model')})", "",
             "Read → checks → reorientation → nnU-Net preprocessing → spine step → loop → export → written mask, "
             "centroids and record, one process per row, CPU. Seconds: best of the runs (wall time of "
             "`predict_from_files`); stages from the record of the last run. "
             "× nnU-Net: nnU-Net's sliding-window seconds (rows above, mirroring off / on) ÷ this row's.", "",
             "| model | backend | centres | mirroring | calls | calls / vertebra | vertebrae found / reference | "
             "Dice mean | s / scan | read | preprocess | spine | loop (network) | export | peak RSS (MB) | "
             "× nnU-Net (off / on) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["e2e"]:
        st = r["stages"]
        best = min(r["seconds_per_scan"])
        n_ref = r.get("n_reference_vertebrae")
        ratios = " / ".join(fmt(ref[k] / best, 1) for k in ("nnunet", "nnunet_mirroring_on") if k in ref) or "–"
        backend = ", ".join(f"{k} {v}" for k, v in (r.get("backend") or {}).items())
        lines.append(
            f"| {r['name']} | {backend} | {r['n_convergence_centres']}"
            f"{' or complete' if r.get('accept_complete_fragment') else ''} | {'on' if r.get('mirroring') else 'off'} | "
            f"{r['n_network_calls']} | {fmt(r['n_network_calls'] / max(1, r['n_vertebrae_found']), 2)} | "
            f"{r['n_vertebrae_found']} / {n_ref if n_ref is not None else '?'} | "
            f"{fmt(r.get('dice_mean'), 3) if not r.get('oracle') else 'oracle'} | {best:.2f} | "
            f"{fmt(st.get('read'), 2)} | {fmt(st.get('preprocess'), 2)} | {fmt(st.get('spine'), 2)} | "
            f"{fmt(st.get('iterative'), 2)} ({fmt(r.get('network_seconds_in_loop'), 2)}) | {fmt(st.get('export'), 2)} | "
            f"{fmt(r['peak_memory_mb'], 0)} | {ratios} |")
    return lines


def format_table(report: dict) -> str:
    rows = [("network", "params", "GFLOPs", "s/patch (median [min-max])", "peak MB")]
    for name in NETS:
        r = report["patch"].get(name)
        if r:
            rows.append((name, f"{r['parameters']:,}", f"{r['flops'] / GIGA:.2f}", fmt_times(r["seconds_per_patch"]),
                         fmt(r["peak_memory_mb"], 0)))
    if report.get("scan"):
        rows.append(("", "", "", "", ""))
        rows.append(("whole scan", "calls", "", "s/scan", "peak MB"))
        for name in NETS:
            r = report["scan"].get(name)
            if r:
                rows.append((name, str(r.get("n_network_calls")), "", fmt_times(r["seconds_per_scan"], 2),
                             fmt(r["peak_memory_mb"], 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
