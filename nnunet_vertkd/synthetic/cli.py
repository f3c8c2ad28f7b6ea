"""``vertkd_make_synthetic OUT --cases N --seed S [--scale F]``: synthetic CT spines as a VerSe release tree.

Options and exit status follow ``nnunet_vertkd.command_line``: 0 written, 2 bad arguments or an output folder that
is not empty (without ``--overwrite``), 130 interrupted.
"""
import argparse
import sys
import time
from typing import List, Optional

from nnunet_vertkd.command_line import (InputError, add_overwrite_option, add_processes_option, add_progress_option,
                                        command)

from .case import SPACING_KINDS
from .verse_tree import SPLIT_FOLDERS, write_synthetic_verse

PROG = "vertkd_make_synthetic"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Generate synthetic CT spine scans with vertebra masks and centroid files, written as a VerSe "
                    f"release tree (OUT/{{{','.join(SPLIT_FOLDERS)}}}/rawdata|derivatives, BIDS names). A stand-in "
                    "for VerSe in tests and demos; deterministic for a seed.",
        epilog="Example: vertkd_make_synthetic /tmp/synverse --cases 10 --seed 0 --scale 0.4 -np 2")
    p.add_argument("out", help="output folder (must be empty or absent unless --overwrite)")
    p.add_argument("--cases", type=int, default=10, help="number of scans (CT files) to write (default 10); "
                   "split about 60/20/20 into 01_training/02_validation/03_test by patient")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical images (default 0)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="anatomy scale: 1.0 = adult size (a whole spine is ~60 cm); 0.4-0.5 keeps a whole spine "
                        "within ~100x100x250 voxels for tests and CPU demos (default 1.0)")
    p.add_argument("--spacing", choices=SPACING_KINDS, default=None,
                   help="force one voxel spacing: iso1 = 1 mm isotropic, thick3 = 1x1x3 mm, inplane08 = 0.8 mm "
                        "in-plane and 1 mm slices (default: a random mix per scan)")
    add_processes_option(p, default=1)
    add_overwrite_option(p, "replace the split folders of an existing non-empty OUT")
    add_progress_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


@command(PROG, interrupted="workers stopped; OUT holds the scans written so far (re-run with --overwrite)")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cases < 1:
        raise InputError("--cases must be >= 1")
    if args.scale <= 0:
        raise InputError("--scale must be > 0")
    t0 = time.time()
    try:
        records = write_synthetic_verse(args.out, args.cases, seed=args.seed, scale=args.scale,
                                        num_processes=max(1, args.num_processes), overwrite=args.overwrite,
                                        spacing=args.spacing, progress=not (args.quiet or args.disable_progress_bar))
    except (FileExistsError, NotADirectoryError) as e:
        raise InputError(str(e)) from None
    if not args.quiet:
        per_split = {s: sum(r["split"] == s for r in records) for s in SPLIT_FOLDERS}
        n_vert = sum(len(r["labels"]) for r in records)
        print(f"wrote {len(records)} scans ({', '.join(f'{k}: {v}' for k, v in per_split.items())}), "
              f"{n_vert} labelled vertebrae, to {args.out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
