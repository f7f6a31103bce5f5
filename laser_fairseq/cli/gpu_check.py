"""`laser-gpu-check`: one command that proves a GPU machine for LASER (the Triton soft-DTW kernel, its speed,
training in every precision); without a GPU, what can run on a CPU. What each check does:
laser_fairseq/gpu_check.py; docs/gpu.md.

    laser-gpu-check [--quick] [--skip-kernel] [--skip-speed] [--skip-training] [--json FILE] [--work-dir DIR]
"""

import argparse
import sys

from laser_fairseq.gpu_check import run_gpu_check


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller kernel checks (lengths / 4, B=2) and 10-update runs: a smoke test, not the proof")
    p.add_argument("--skip-kernel", action="store_true", help="skip the kernel accuracy checks")
    p.add_argument("--skip-speed", action="store_true", help="skip the speed and memory measurements (GPU only)")
    p.add_argument("--skip-training", action="store_true", help="skip the LASER training runs")
    p.add_argument("--updates", type=int, help="updates per LASER run (default 20; 10 with --quick)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per implementation, median (default 20)")
    p.add_argument("--work-dir", help="folder for the training runs (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.updates is not None and args.updates < 2:
        p.error("--updates must be >= 2 (the check compares the first and last losses)")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    status = run_gpu_check(quick=args.quick, skip_kernel=args.skip_kernel, skip_speed=args.skip_speed,
                           skip_training=args.skip_training, updates=args.updates, repeats=args.repeats,
                           work_dir=args.work_dir, json_path=args.json)
    sys.exit(status)


if __name__ == "__main__":
    main()
