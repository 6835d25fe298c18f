"""The same ``mqm check`` timed on two checkouts of mqm, side by side, on one store.

For refactors that must not slow the check down. Run by hand, not by pytest::

    git worktree add /tmp/mqm-before <commit>
    .venv/bin/python bench/compare_trees.py --before /tmp/mqm-before [--rows 1000000]

It builds one SQLite store with N log rows of the sample model in one window (the data
generator is bench/read_window.py's) and compacts it into log blocks with this tree's
code, then runs ``run_check`` in fresh processes, alternating between the two trees
(``PYTHONPATH`` pointing at each), and prints the median, min and max seconds of each.
Both trees must read the same store (the same migration head).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import write_config
from read_window import MODEL, SPAN, START, build_database

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from datetime import timedelta
t0 = time.perf_counter()
from monitor.config import load_config
try:
    from monitor.run.check import run_check
except ImportError:  # a checkout from before the run/ package
    from monitor.pipeline import run_check
from monitor.store.db import create_engine
import monitor
cfg = load_config(sys.argv[1])
run = run_check(create_engine(cfg.database_url), cfg, sys.argv[2],
                at=__import__("datetime").datetime.fromisoformat(sys.argv[3]), persist=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": run.rows,
                  "status": run.status, "tree": monitor.__file__}))
"""


def timed(tree: Path, config: Path, at: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), MODEL, at], env=env,
                          capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{tree}: the check failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(result["tree"]).startswith(str(tree)), result["tree"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from datetime import timedelta

    from monitor.store.compaction import compact
    from monitor.store.db import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "store.db"
        build_database(f"sqlite:///{db}", args.rows, seed=11)
        span_days = SPAN.days
        config = write_config(folder, db, span_days)
        compact(create_engine(f"sqlite:///{db}"), MODEL)
        at = (START + timedelta(days=span_days)).isoformat()
        trees = {"before": args.before.resolve(), "after": ROOT}
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                result = timed(tree, config, at)
                seconds[name].append(float(result["seconds"]))  # type: ignore[arg-type]
                print(f"{name:>6}: {result['seconds']:.2f} s  {result['rows']} rows  "
                      f"{result['status']}", flush=True)
        for name, values in seconds.items():
            print(f"{name:>6}: median {statistics.median(values):.2f} s "
                  f"(min {min(values):.2f}, max {max(values):.2f}) over {len(values)} runs")


if __name__ == "__main__":
    main()
