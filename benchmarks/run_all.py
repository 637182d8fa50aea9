"""Run every ``benchmarks/bench_*.py`` script, one subprocess each, and pass their tables through.

Each script is independent (own temp root, own floors); running them one after another
keeps them from competing for the two cores. ``--quick`` is passed on to every script
that declares that option.
Exit status: 0 when every script exited 0 (all targets met), else 1.

    .venv/bin/python benchmarks/run_all.py [--quick] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("-k", dest="select", default="", help="only scripts whose name contains this")
    args = parser.parse_args(argv)

    scripts = sorted(path for path in HERE.glob("bench_*.py") if args.select in path.name)
    if not scripts:
        print("no benchmark scripts found", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # time an installed package, not recompiles
    failed: list[str] = []
    for script in scripts:
        # A script that has no --quick option (yet) runs with its defaults.
        quick = args.quick and '"--quick"' in script.read_text(encoding="utf-8")
        command = [sys.executable, str(script), *(["--quick"] if quick else [])]
        print(f"\n### {script.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(command, env=env, check=False).returncode
        print(f"### {script.name}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(script.name)
    print(f"\n{len(scripts) - len(failed)}/{len(scripts)} benchmark scripts met every target", end="")
    print(f"; missed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
