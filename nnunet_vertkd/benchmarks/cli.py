"""``vertkd_benchmark``: the efficiency benchmark, the distillation study, the oracle loop and calls against
accuracy (docs/benchmarks.md). Options follow ``nnunet_vertkd.command_line``; bad input exits with 2."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from nnunet_vertkd.command_line import command

PROG = "vertkd_benchmark"


def build_parser() -> argparse.ArgumentParser:
    from nnunet_vertkd.benchmarks import efficiency, loop_accuracy, oracle_loop, study
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the plugin: 'efficiency' (parameters, FLOPs, memory, time per patch and per scan of "
                    "the teacher, the student and nnU-Net's default network) and 'study' (the distillation study, "
                    "paper Table 3, on synthetic VerSe-format data). See docs/benchmarks.md.",
        epilog="examples:\n"
               "  vertkd_benchmark efficiency --out bench/ --runs 5 -device cpu --patch 128\n"
               "  vertkd_benchmark efficiency --patch 32 --runs 2 --no-scan --out /tmp/mini   # seconds\n"
               "  vertkd_benchmark study --scale cpu --out study_cpu/ --seeds 0\n"
               "  vertkd_benchmark oracle   # the loop with a perfect network: calls per vertebra, seconds\n")
    sub = p.add_subparsers(dest="command", required=True, metavar="{efficiency,study,oracle,loop}")
    for name, module, add, what in (
            ("efficiency", efficiency, efficiency.add_arguments, "cost of teacher, student and nnU-Net's planned network"),
            ("study", study, study.add_arguments, "the distillation study (T_B, T_S, S_S, S_T3, S_T4, S_T5, S_L, S_LW)"),
            ("oracle", oracle_loop, oracle_loop.add_arguments,
             "the iterative loop with a perfect network on real and synthetic spines"),
            ("loop", loop_accuracy, loop_accuracy.add_loop_arguments,
             "network calls against accuracy of a trained model (centres, mirroring)")):
        add(sub.add_parser(name, help=what, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter))
    return p


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "efficiency":
        from nnunet_vertkd.benchmarks import efficiency
        efficiency.run(args, argv[1:])
        return 0
    if args.command == "loop":
        from nnunet_vertkd.benchmarks import loop_accuracy
        return loop_accuracy.run_loop(args, argv[1:])
    if args.command == "oracle":
        from nnunet_vertkd.benchmarks import oracle_loop
        return oracle_loop.run(args)
    from nnunet_vertkd.benchmarks import study
    return study.run(args, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
