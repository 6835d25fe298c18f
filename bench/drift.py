"""Benchmark: monitor.checks.drift.check_drift against Evidently 0.7's DataDriftPreset.

Both run on the same synthetic frames (20 numeric + 5 categorical columns, reference and current
of the same row count, drift in a few columns, nulls in some). Every measurement runs in its own
spawned child process, which builds the frames itself (same seed, same data), so its peak RSS is
its own; the high-water mark is reset after the frames are built (Linux /proc/self/clear_refs),
so "peak" is the frames plus the work, and "work" is the peak minus the RSS with the frames
loaded. Run from the repository root:

    .venv/bin/python bench/drift.py                        # 100k and 1M rows, about 4-5 minutes
    .venv/bin/python bench/drift.py --rows 100000 --small-rows 10000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

N_NUM, N_CAT = 20, 5
SEED = 20240611


def make_frames(rows: int) -> tuple[Any, Any, dict[str, str]]:
    """Reference and current; drift in n00-n02 (shift, scale, mixture), c0 and c1 (new value)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    vocab = np.array(["north", "south", "east", "west", "centre", "other"], dtype=object)

    def frame(drift: bool) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for i in range(N_NUM):
            if i % 4 == 3:  # integer-valued (ages, counts): many ties
                values = rng.integers(0, 90, rows).astype(float)
            elif i % 4 == 2:
                values = rng.lognormal(3, 0.8, rows)
            else:
                values = rng.normal(50, 10, rows)
            if drift and i == 0:
                values = values + 3.0
            if drift and i == 1:
                values = 50 + (values - 50) * 1.3
            if drift and i == 2:
                values = np.where(rng.random(rows) < 0.2, values * 2, values)
            if i >= 15:  # nulls: sizes differ per column, as in real windows
                values[rng.random(rows) < (0.03 if drift else 0.01)] = np.nan
            cols[f"n{i:02d}"] = values
        for j in range(N_CAT):
            p = np.array([0.3, 0.25, 0.2, 0.15, 0.1, 0.0])
            if drift and j == 0:
                p = np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.0])
            if drift and j == 1:
                p = np.array([0.29, 0.25, 0.2, 0.14, 0.1, 0.02])
            cols[f"c{j}"] = vocab[rng.choice(6, rows, p=p)]  # object dtype, shared str objects
        return pd.DataFrame(cols)

    columns = {f"n{i:02d}": "num" for i in range(N_NUM)} | {f"c{j}": "cat" for j in range(N_CAT)}
    return frame(False), frame(True), columns


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_check(rows: int, repeats: int, extras: bool, out: Any) -> None:
    import numpy as np

    from monitor.checks.drift import ReferenceProfile, check_drift
    from monitor.config import DriftConfig

    rss_imports = _rss_mb()
    ref, cur, columns = make_frames(rows)
    rss_data = _rss_mb()
    reset = _reset_peak()
    t0 = time.perf_counter()
    profile = ReferenceProfile.build(ref, columns)  # type: ignore[arg-type]
    build_s = time.perf_counter() - t0
    rss_profile = _rss_mb()
    config = DriftConfig()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = check_drift(profile, cur, config=config)
        times.append(time.perf_counter() - t0)
    report: dict[str, Any] = {
        "times": times, "build_s": build_s, "rss_imports": rss_imports, "rss_data": rss_data,
        "rss_profile": rss_profile, "peak": _peak_mb(), "reset": reset,
        "scores": {f.feature: (f.method, f.score, f.drifted) for f in result.features},
        "share": result.share_drifted, "dataset_drift": result.dataset_drift,
    }
    if extras:
        report["profile_top"] = _where_time_goes(profile, cur, config)
        report["threads"] = _threads(np, ref, cur)
    out.put(report)


def _where_time_goes(profile: Any, cur: Any, config: Any) -> list[str]:
    import cProfile
    import pstats

    from monitor.checks.drift import check_drift

    prof = cProfile.Profile()
    prof.runcall(check_drift, profile, cur, config=config)
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:6]  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    return [f"{tt:6.3f} s {100 * tt / total:4.0f}%  {calls:4d} calls  {func[2]} "
            f"({func[0].rsplit('/', 1)[-1]}:{func[1]})"
            for func, (_, calls, tt, _, _) in rows]


def _threads(np: Any, ref: Any, cur: Any) -> dict[int, float]:
    """The numeric columns' core (sort the window, W1 against the sorted reference) with 1 and
    2 worker threads: numpy releases the GIL in both, so this is the best case for threads."""
    from concurrent.futures import ThreadPoolExecutor

    from monitor.checks import stattests as st

    names = [f"n{i:02d}" for i in range(N_NUM)]
    refs = {}
    for name in names:
        values = ref[name].to_numpy()
        refs[name] = np.sort(values[np.isfinite(values)])

    def one(name: str) -> float:
        values = cur[name].to_numpy()
        values = np.sort(values[np.isfinite(values)])
        return st.wasserstein_norm(refs[name], values, float(np.std(refs[name])))

    result = {}
    for workers in (1, 2):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, names))
            times.append(time.perf_counter() - t0)
        result[workers] = statistics.median(times)
    return result


_SHORT = {"K-S p_value": "ks", "chi-square p_value": "chisquare", "Z-test p_value": "z",
          "Wasserstein distance (normed)": "wasserstein",
          "Jensen-Shannon distance": "jensenshannon"}


def child_evidently(rows: int, repeats: int, out: Any) -> None:
    import warnings

    warnings.simplefilter("ignore")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rss_imports = _rss_mb()
    ref, cur, columns = make_frames(rows)
    rss_data = _rss_mb()
    reset = _reset_peak()
    definition = DataDefinition(
        numerical_columns=[c for c, k in columns.items() if k == "num"],
        categorical_columns=[c for c, k in columns.items() if k == "cat"],
    )
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        snap = Report([DataDriftPreset()], include_tests=True).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        times.append(time.perf_counter() - t0)
    peak = _peak_mb()
    result = snap.dict()
    scores: dict[str, list[Any]] = {}
    ids: dict[str, str] = {}
    share, count_id, dataset_drift = None, None, None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            method = _SHORT.get(config["method"], config["method"])
            scores[config["column"]] = [method, metric["value"], None]
            ids[metric["id"]] = config["column"]
        elif config["type"].endswith(":DriftedColumnsCount"):
            share, count_id = metric["value"]["share"], metric["id"]
    for test in result["tests"]:
        metric_id = test["metric_config"]["metric_id"]
        if metric_id in ids:
            scores[ids[metric_id]][2] = test["status"] == "FAIL"
        elif metric_id == count_id:
            dataset_drift = test["status"] == "FAIL"
    out.put({"times": times, "rss_imports": rss_imports, "rss_data": rss_data, "peak": peak,
             "reset": reset, "scores": {k: tuple(v) for k, v in scores.items()},
             "share": share, "dataset_drift": dataset_drift})


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    report = queue.get()
    proc.join()
    return report


def _compare(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[float, int, int]:
    diff, methods, verdicts = 0.0, 0, 0
    for name, (method, score, drifted) in ours["scores"].items():
        t_method, t_score, t_drifted = theirs["scores"][name]
        diff = max(diff, abs(score - t_score))
        methods += method == t_method
        verdicts += drifted == t_drifted
    return diff, methods, verdicts


def _fmt_times(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s  (" + ", ".join(f"{t:.3f}" for t in times) + ")"


def run(rows: int, repeats: int, ev_repeats: int, extras: bool) -> None:
    print(f"\n== {rows:,} rows (reference) x {rows:,} rows (current), "
          f"{N_NUM} numeric + {N_CAT} categorical columns")
    ours = _in_child(child_check, rows, repeats, extras)
    theirs = _in_child(child_evidently, rows, ev_repeats)
    ours_s, theirs_s = statistics.median(ours["times"]), statistics.median(theirs["times"])
    print(f"check_drift, profile cached  median {_fmt_times(ours['times'])}")
    print(f"ReferenceProfile.build       {ours['build_s']:.3f} s (once per reference)")
    print(f"check_drift incl. build      {ours_s + ours['build_s']:.3f} s")
    print(f"Evidently DataDriftPreset    median {_fmt_times(theirs['times'])}")
    print(f"speed-up                     {theirs_s / ours_s:,.0f}x per window "
          f"({theirs_s / (ours_s + ours['build_s']):,.0f}x with the profile build)")
    print("memory (MB)            after imports  with frames  peak (frames + work)  work")
    for label, rep in (("check_drift", ours), ("Evidently", theirs)):
        print(f"  {label:<20} {rep['rss_imports']:13.0f} {rep['rss_data']:12.0f} "
              f"{rep['peak']:21.0f} {rep['peak'] - rep['rss_data']:5.0f}")
    print(f"  (profile held in memory: {ours['rss_profile'] - ours['rss_data']:.0f} MB; "
          f"peak reset after the frames: {ours['reset'] and theirs['reset']}; "
          f"peak ratio {ours['peak'] / theirs['peak']:.2f}, work ratio "
          f"{(ours['peak'] - ours['rss_data']) / (theirs['peak'] - theirs['rss_data']):.2f})")
    diff, methods, verdicts = _compare(ours, theirs)
    n = len(ours["scores"])
    print(f"max |score difference| over {n} columns: {diff:.2e}; same method {methods}/{n}, "
          f"same verdict {verdicts}/{n}; share drifted {ours['share']:.2f} vs "
          f"{theirs['share']:.2f}, dataset drift {ours['dataset_drift']} vs "
          f"{theirs['dataset_drift']}")
    if extras:
        print("where check_drift's time goes (cProfile, one call, top 6 by own time):")
        for line in ours["profile_top"]:
            print("  " + line)
        threads = ours["threads"]
        print(f"threads, sort + W1 of the {N_NUM} numeric columns: 1 worker {threads[1]:.3f} s, "
              f"2 workers {threads[2]:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--small-repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.small_rows:
        run(args.small_rows, args.small_repeats, args.small_repeats, extras=False)
    run(args.rows, args.repeats, args.evidently_repeats, extras=True)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
