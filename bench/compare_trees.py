"""The same ``mqm check`` timed on two checkouts of mqm, side by side, on one store.

For refactors that must not slow the check down, and to measure one that speeds it up.
Run by hand, not by pytest::

    git worktree add /tmp/mqm-before <commit>
    .venv/bin/python bench/compare_trees.py --before /tmp/mqm-before [--rows 1000000]
        [--repeats 5] [--naive]

It builds one SQLite store with N log rows of the sample model in one window (the data
generator is bench/read_window.py's) and compacts it into log blocks with this tree's
code. Each tree then gets its own copy of that store, migrated by its own code (the
trees may differ in migrations, as long as this tree knows the other's newest one: the
copy is first taken down to it with this tree's migrations). In pairs, alternating
between the trees (``PYTHONPATH`` pointing at each), it times:

- whole: the command ``mqm check --model M --at T --no-save`` in a fresh process, from
  its start to its exit (interpreter, imports, config, compaction of new rows (none),
  read, checks), with the process's CPU seconds and peak RSS (``os.wait4``);
- in-process: ``run_check`` (persist=False) in a fresh process, timed from after
  ``monitor.run.check`` is imported (what bench/check.py times), as before; and
  "again": the same check a second time in that process, as a long-lived one (the
  scheduler of ``mqm serve``) runs every check after its first; and that check's read
  of the window alone ("its read": ``evaluate._read_whole``, where a tree has it).

``--reads K`` then times the window's read alone (``block_reader.read_window``), 15 times
warm in each of K processes per tree, alternating: its median and minimum.

One untimed check per tree comes first, so that each times the check every later window
gets (a tree that stores the reference profile builds it then; that first check is
timed and printed apart). ``--naive`` also times, once, what a user would write by hand
(bench/check.py's ``naive``: ``pandas.read_sql`` and Evidently's presets), for the
speed-up. It prints every pair, then the median, min and max of each figure, and the
load average before and after.
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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import write_config
from read_window import MODEL, SPAN, START, build_database

ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = """
import json, sys, time
from datetime import datetime
from monitor.config import load_config
from monitor.run.check import run_check
from monitor.store.db import create_engine
import monitor
import monitor.run.evaluate as evaluate
# The window's read, timed apart (a tree that has it: ``_read_whole``).
reads = []
if hasattr(evaluate, "_read_whole"):
    read_whole = evaluate._read_whole
    def timed_read(*args, **kwargs):
        t = time.perf_counter()
        try:
            return read_whole(*args, **kwargs)
        finally:
            reads.append(time.perf_counter() - t)
    evaluate._read_whole = timed_read
t0 = time.perf_counter()
cfg = load_config(sys.argv[1])
engine = create_engine(cfg.database_url)
run = run_check(engine, cfg, sys.argv[2], at=datetime.fromisoformat(sys.argv[3]),
                persist=False)
first = time.perf_counter() - t0
# Again in the same process, as ``mqm serve``'s scheduler runs every check after its first.
t1 = time.perf_counter()
run_check(engine, cfg, sys.argv[2], at=datetime.fromisoformat(sys.argv[3]), persist=False)
print(json.dumps({"seconds": first, "again": time.perf_counter() - t1, "rows": run.rows,
                  "read_again": reads[-1] if reads else None, "status": run.status,
                  "tree": monitor.__file__}))
"""

# The window's read alone (``block_reader.read_window`` as a check calls it), warm, 15
# times in one process: the median and the minimum (the read is 0.5-0.7 s; a whole
# check's spread hides changes of tens of milliseconds in it).
READS = """
import json, statistics, sys, time
from datetime import datetime, timedelta
from monitor.config import load_config
from monitor.store import block_reader
from monitor.store.db import create_engine
import monitor.run.evaluate as evaluate
cfg = load_config(sys.argv[1])
engine = create_engine(cfg.database_url)
end = datetime.fromisoformat(sys.argv[3])
args = (engine, sys.argv[2], end - cfg.models[sys.argv[2]].window, end,
        evaluate._UNREAD_META)
block_reader.read_window(*args, at_most=10**9)
times = []
for _ in range(15):
    t = time.perf_counter()
    frames = block_reader.read_window(*args, at_most=10**9)
    times.append(time.perf_counter() - t)
    del frames
print(json.dumps({"median": statistics.median(times), "min": min(times)}))
"""

WHOLE = """
import sys
import monitor
sys.stderr.write("TREE " + monitor.__file__ + "\\n")
import monitor.cli.main as cli
sys.argv[0] = "mqm"
# The program as installed (``run``: main, then the exit); a tree from before it, main.
cli.run() if hasattr(cli, "run") else cli.main(sys.argv[1:], prog_name="mqm")
"""


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def in_process(tree: Path, config: Path, at: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(config), MODEL, at],
                          env=_env(tree), capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{tree}: the check failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(result["tree"]).startswith(str(tree)), result["tree"]
    return result


def _wait4(args: list[str], tree: Path) -> tuple[float, Any, bytes, bytes]:
    """Run ``args``; wall seconds and the rusage of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=_env(tree), cwd=tree, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here
    return time.perf_counter() - t0, usage, out, err


def whole_check(tree: Path, config: Path, at: str) -> dict[str, Any]:
    seconds, usage, out, err = _wait4(
        [sys.executable, "-c", WHOLE, "--config", str(config), "check", "--model", MODEL,
         "--at", at, "--no-save", "--json"], tree)
    text = err.decode()
    if not text.startswith(f"TREE {tree}"):
        raise SystemExit(f"{tree}: not this tree's mqm, or it failed:\n{text}")
    run = json.loads(out)
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024, "rows": run["rows"], "status": run["status"]}


def _migrate_to(tree: Path, db: Path, config: Path) -> None:
    """Bring a copy of the store to ``tree``'s newest revision: down with this tree's
    migrations when ``tree`` is older, then up with ``tree``'s own."""
    head = subprocess.run(
        [sys.executable, "-c", "from monitor.store.db import head_revision as h; print(h())"],
        env=_env(tree), cwd=tree, capture_output=True, text=True, check=True).stdout.strip()
    from alembic import command

    from monitor.store.db import _alembic_config, _known_revision, create_engine

    if _known_revision(head):
        engine = create_engine(f"sqlite:///{db}")
        with engine.connect() as conn, conn.begin():
            command.downgrade(_alembic_config(conn), head)
        engine.dispose()
    subprocess.run([sys.executable, "-m", "monitor", "--config", str(config), "db", "upgrade"],
                   env=_env(tree), cwd=tree, capture_output=True, text=True, check=True)


def _stats(values: list[float], unit: str = "s", digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} {unit} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _build(db: str, rows: int) -> None:
    """The store, compacted; run in a child process (see ``main``)."""
    from monitor.store.compaction import compact
    from monitor.store.db import create_engine

    build_database(f"sqlite:///{db}", rows, seed=11)
    compact(create_engine(f"sqlite:///{db}"), MODEL)


def _own_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reads", type=int, default=0,
                        help="then time the window's read alone in this many processes "
                        "per tree, alternating")
    parser.add_argument("--naive", action="store_true",
                        help="also time the naive path once, for the speed-up")
    args = parser.parse_args()
    from datetime import timedelta

    from check import in_child

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "store.db"
        # Built in a child: a process started by this one reports this one's peak RSS
        # as its own if that is higher (Linux carries it over an exec), so this process
        # stays small (building the store in it raised every check's "peak" to 666 MB).
        in_child(_build, str(db), args.rows)
        span_days = SPAN.days
        at = (START + timedelta(days=span_days)).isoformat()
        trees = {"before": args.before.resolve(), "after": ROOT}
        configs = {}
        for name, tree in trees.items():
            (folder / name).mkdir()
            shutil.copyfile(db, folder / name / "store.db")
            configs[name] = write_config(folder / name, folder / name / "store.db", span_days)
            _migrate_to(tree, folder / name / "store.db", configs[name])
            # Each tree's bytecode written, as an installed package has it (pip compiles
            # at install): where PYTHONDONTWRITEBYTECODE is set, as on the CI machines, an
            # editable checkout's modules were compiled again by every process.
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "monitor")],
                           check=True)
        print(f"load average before: {_load()}; this process's peak RSS "
              f"{_own_peak_mb():.0f} MB (the floor of the peaks below)", flush=True)
        for name, tree in trees.items():
            first = whole_check(tree, configs[name], at)
            print(f"{name:>6}: first check {first['seconds']:.2f} s (CPU {first['cpu']:.2f} s, "
                  f"peak {first['peak_mb']:.0f} MB)", flush=True)
        figures: dict[str, dict[str, list[float]]] = {
            name: {"whole": [], "cpu": [], "peak_mb": [], "in_process": [], "again": [],
                   "read_again": []}
            for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                w = whole_check(tree, configs[name], at)
                p = in_process(tree, configs[name], at)
                for key, value in (("whole", w["seconds"]), ("cpu", w["cpu"]),
                                   ("peak_mb", w["peak_mb"]), ("in_process", p["seconds"]),
                                   ("again", p["again"])):
                    figures[name][key].append(value)
                if p.get("read_again") is not None:
                    figures[name]["read_again"].append(p["read_again"])
                read = (f" (its read {p['read_again']:.2f} s)"
                        if p.get("read_again") is not None else "")
                print(f"{name:>6}: whole {w['seconds']:.2f} s (CPU {w['cpu']:.2f} s, peak "
                      f"{w['peak_mb']:.0f} MB), in-process {p['seconds']:.2f} s, again "
                      f"{p['again']:.2f} s{read}, {w['rows']} rows {w['status']}", flush=True)
        print(f"load average after: {_load()}")
        for name, f in figures.items():
            read = f" (its read {_stats(f['read_again'])})" if f["read_again"] else ""
            print(f"{name:>6}: whole {_stats(f['whole'])}, CPU {_stats(f['cpu'])}, in-process "
                  f"{_stats(f['in_process'])}, again {_stats(f['again'])}{read}, peak "
                  f"{_stats(f['peak_mb'], 'MB', 0)} over {len(f['whole'])} pairs")
        for _ in range(args.reads):
            for name, tree in trees.items():
                done = subprocess.run([sys.executable, "-c", READS, str(configs[name]), MODEL,
                                       at], env=_env(tree), capture_output=True, text=True,
                                      cwd=tree, check=True)
                got = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{name:>6}: the window's read alone, 15 times warm: median "
                      f"{got['median']:.3f} s, min {got['min']:.3f} s", flush=True)
        if args.naive:
            from check import naive

            nv = in_child(naive, str(db))
            print(f" naive: {nv['seconds']:.1f} s, peak {nv['peak_mb']:.0f} MB; load "
                  f"{_load()}")
            for name, f in figures.items():
                print(f"{name:>6}: {nv['seconds'] / statistics.median(f['whole']):.1f}x "
                      "faster than naive (whole process)")


if __name__ == "__main__":
    main()
