"""Where a ``mqm check`` spends its CPU: each step of ``run_check`` timed, per tree.

Run by hand, not by pytest::

    .venv/bin/python bench/check_steps.py [--rows 1000000] [--repeats 3]
        [--before /tmp/mqm-before]

It builds the 1M-row store of ``compare_trees.py`` (one window, compacted into log
blocks), then, in fresh processes alternating between the trees (``PYTHONPATH``), runs
``run_check`` (persist=False) with the main steps wrapped: the imports before it, the
read of the window, the schema check, drift, performance and its estimate, service,
versions. It prints each step's CPU seconds (median, min-max) and the peak RSS after
each step (``ru_maxrss``: the step that raised it is the one to look at).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import in_child, write_config
from compare_trees import _build, _load, _migrate_to
from read_window import MODEL, SPAN, START

ROOT = Path(__file__).resolve().parents[1]

STEPS = """
import functools, json, resource, sys, time
from datetime import datetime
t0 = time.process_time()
from monitor.config import load_config
from monitor.run.check import run_check
from monitor.store.db import create_engine
import monitor.checks.drift as drift
import monitor.checks.estimated as estimated
import monitor.checks.health as health
import monitor.checks.performance as performance
import monitor.checks.schema_check as schema_check
import monitor.checks.versions as versions
import monitor.run.evaluate as evaluate
cpu = {"imports": time.process_time() - t0}
peaks = {}

def wrap(owner, name, label):
    step = getattr(owner, name)

    @functools.wraps(step)
    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return step(*args, **kwargs)
        finally:
            cpu[label] = cpu.get(label, 0.0) + time.process_time() - started
            peaks[label] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    setattr(owner, name, timed)

wrap(evaluate, "_read_whole", "read")
wrap(schema_check.SchemaAccumulator, "add", "schema")
wrap(drift, "check_drift", "drift")
wrap(evaluate, "_performance", "performance+estimate")
wrap(estimated, "check_estimated", "performance's estimate")
wrap(health, "check_service", "service")
wrap(versions, "check_versions", "versions")
cfg = load_config(sys.argv[1])
started = time.process_time()
run_check(create_engine(cfg.database_url), cfg, sys.argv[2],
          at=datetime.fromisoformat(sys.argv[3]), persist=False)
cpu["run_check"] = time.process_time() - started
print(json.dumps({"cpu": cpu, "peaks": peaks}))
"""


def steps(tree: Path, config: Path, at: str) -> dict[str, dict[str, float]]:
    done = subprocess.run([sys.executable, "-c", STEPS, str(config), MODEL, at],
                          env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: the check failed:\n{done.stderr}")
    result: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout, timed alternately")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from datetime import timedelta

    trees = {"after": ROOT} if args.before is None else {"before": args.before.resolve(),
                                                         "after": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "store.db"
        in_child(_build, str(db), args.rows)
        at = (START + timedelta(days=SPAN.days)).isoformat()
        configs = {}
        for name, tree in trees.items():
            (folder / name).mkdir()
            shutil.copyfile(db, folder / name / "store.db")
            configs[name] = write_config(folder / name, folder / name / "store.db", SPAN.days)
            _migrate_to(tree, folder / name / "store.db", configs[name])
            steps(tree, configs[name], at)  # the first check stores the reference profile
        print(f"load average before: {_load()}", flush=True)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                runs[name].append(steps(tree, configs[name], at))
        print(f"load average after: {_load()}")
    for name, results in runs.items():
        print(f"{name}: CPU seconds per step, median (min-max) of {len(results)}; peak RSS "
              "after the step, MB (median)")
        for label in results[0]["cpu"]:
            values = [r["cpu"].get(label, 0.0) for r in results]
            peaks = [r["peaks"][label] for r in results if label in r["peaks"]]
            peak = f"  peak {statistics.median(peaks):.0f}" if peaks else ""
            print(f"  {label:22s} {statistics.median(values):.3f} ({min(values):.3f}-"
                  f"{max(values):.3f}){peak}")


if __name__ == "__main__":
    main()
