"""Another benchmark of this directory, run alternately on a git revision and on the working tree.

    python benchmarks/bench_compare.py --base REV [--rounds 2] -- bench_sweep.py --skip-parallelism --skip-mnist

For a change that must not slow anything down (a restructuring): the same benchmark, same machine, same
minutes, base and new alternating (base, new, base, new, ...) so that a noisy neighbour hits both alike.
The base revision is checked out with ``git worktree`` into a temporary directory and imported from there
(``PYTHONPATH`` puts it before the installed working tree; spawned workers inherit it). Each run's output
is printed as it is, under a header naming the tree and the round.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(tree: Path, bench: list[str], label: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep))
    env.setdefault("NNCORE_MNIST_T10K", str(REPO.parent / "shared" / "data" / "mnist-t10k"))  # the same data for both
    script = tree / "benchmarks" / bench[0]
    print(f"\n===== {label} ({tree}) =====", flush=True)
    subprocess.run([sys.executable, str(script), *bench[1:]], env=env, cwd=tree, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. a commit before the change)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a script of benchmarks/ and its arguments")
    args = parser.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if not bench or not (REPO / "benchmarks" / bench[0]).is_file():
        parser.error(f"give the benchmark to run after --, e.g. -- bench_sweep.py --skip-mnist; got {bench!r}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            for r in range(1, args.rounds + 1):
                run(base, bench, f"base {args.base}, round {r}")
                run(REPO, bench, f"working tree, round {r}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
