"""Command line: ``python -m xpmat info | demo | bench``.

``info`` prints library versions and the backends found (devices, float64/bf16).
``demo`` prints the same, then trains the digits MLP with every optimizer (:mod:`xpmat.demo`).
``bench`` times each primitive against its anchor (:mod:`xpmat.bench`).
"""

from __future__ import annotations

import argparse
import os
import sys

from xpmat._optional import install_message, missing
from xpmat.backends import available_backends, library_versions

# What each command imports beyond the runtime requirements (see xpmat._optional).
NEEDS = {"bench": ("sklearn", "matplotlib"), "demo": ("torch", "sklearn", "matplotlib")}


def info(out=None) -> None:
    """Print library versions and every usable backend (to ``out``, default stdout)."""
    out = sys.stdout if out is None else out
    print("xpmat environment", file=out)
    print("libraries:", file=out)
    for name, ver in library_versions().items():
        print(f"  {name:<18} {ver if ver is not None else '-- not installed'}", file=out)
    print("backends:", file=out)
    print(f"  {'name':<18} {'device':<14} {'float64':<8} {'bfloat16':<9} detail", file=out)
    for b in available_backends():
        dev = str(b.device).replace("array_api_strict.", "")
        print(f"  {b.name:<18} {dev:<14} {'yes' if b.float64 else 'no':<8} "
              f"{'yes' if b.bfloat16 else 'no':<9} {b.detail}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xpmat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="library versions, backends, devices, float64/bf16 support")
    sub.add_parser("demo", help="print info, then run the demonstration")
    bench = sub.add_parser("bench", help="time and accuracy of every primitive against its anchor")
    bench.add_argument("--backend", default=None, help="one backend name (default: all present)")
    bench.add_argument("--quick", action="store_true", help="small sizes (< 60 s on 2 CPU cores)")
    bench.add_argument("--out", default="bench-out", help="folder for bench.md and bench.png")
    args = parser.parse_args(argv)
    absent = missing(NEEDS.get(args.command, ()))
    if absent:
        print(f"error: {install_message(f'xpmat {args.command}', absent)}", file=sys.stderr)
        return 2
    if args.command == "bench":
        # NumPy and torch timed in one process: spinning OpenMP workers would starve OpenBLAS
        # (and back) on a few cores, see docs/performance.md.  Must precede importing torch.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from xpmat.bench import run_bench

        run_bench(backend=args.backend, quick=args.quick, out=args.out)
        return 0
    if args.command == "info":
        info()
    elif args.command == "demo":
        info()
        print(flush=True)
        from xpmat.demo import run_demo

        run_demo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
