"""Run every benchmark script (`bench_*.py`) in its own process and echo its `bench.NAME: VALUE UNIT` lines.

Between two scripts the benchmark databases are dropped (BENCH_KEEP_DATABASES=1 keeps them for a look).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import drop_bench_databases  # noqa: E402  (after the path set-up above)


def main() -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    failed = []
    started = time.perf_counter()
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"# {script.name}", flush=True)
        done = subprocess.run([sys.executable, str(script)], env=env, check=False)
        if done.returncode:
            failed.append(script.name)
        if not os.environ.get("BENCH_KEEP_DATABASES"):
            # Each benchmark starts on a quiet server: no autovacuum of the previous one's data under its clock.
            drop_bench_databases()
    print(f"# all benchmarks took {time.perf_counter() - started:.0f}s", flush=True)
    if failed:
        print(f"# FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
