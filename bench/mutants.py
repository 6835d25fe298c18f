"""Planted bugs in important logic, one at a time, each against the tests that should
catch it: a small mutation test, run by hand (``make mutants``), never in CI.

It copies the tree to a temporary folder, applies one mutant there, runs the named
tests (``pytest -x``) with that copy first on ``PYTHONPATH``, and reports which tests
killed it (failed) and which mutants survived, with the kill rate. The mutants of the
PostgreSQL leases need ``MQM_TEST_POSTGRES_URL`` (as the tests do); without it they are
reported as skipped and left out of the rate.

    .venv/bin/python bench/mutants.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    postgres: bool = False  # its tests run only with MQM_TEST_POSTGRES_URL


# From the lapsed-lease query to the take-over's condition (both see a lease as lapsed).
_LAPSED_TO_ACQUIRE = '''f"AND (holder IS NULL OR expires_at <= {_NOW}) ORDER BY model",
            models=list(models))
        return [str(row[0]) for row in rows]

    def acquire(self, model: str) -> int | None:
        """Take ``model``'s lease if nobody holds it now; its new token, or None."""
        token = self._run(
            f"UPDATE model_leases SET holder = :replica, token = token + 1, "
            f"expires_at = {_UNTIL}, acquired_at = {_NOW}, renewed_at = {_NOW} "
            f"WHERE model = :model AND (holder IS NULL OR expires_at <= {_NOW}) "'''

MUTANTS = (
    Mutant("latest window one step early", "monitor/run/check.py",
           "None if newest is None else window_holding(newest, size)",
           "None if newest is None else window_holding(newest - timedelta(microseconds=1), size)",
           ("tests/run/test_check_run.py",)),
    Mutant("window starts 1 s late", "monitor/times.py",
           "    return end - size, end\n",
           "    return end - size + timedelta(seconds=1), end\n",
           ("tests/run/test_check_run.py",)),
    Mutant("late labels after the newest label mark", "monitor/store/block_reader.py",
           "after = min(marks)\n"
           "            late = _late_labels(raw, dialect, model, after, low, high)\n    if stale",
           "after = max(marks)\n"
           "            late = _late_labels(raw, dialect, model, after, low, high)\n    if stale",
           ("tests/store/test_blocks.py",)),
    Mutant("mature only after max_label_delay", "monitor/checks/performance.py",
           "age >= config.max_label_delay", "age > config.max_label_delay",
           ("tests/checks/test_performance.py",)),
    Mutant("distances drift above, not at, the threshold", "monitor/checks/stattests.py",
           "_P_LE, _P_LT, _DIST = operator.le, operator.lt, operator.ge",
           "_P_LE, _P_LT, _DIST = operator.le, operator.lt, operator.gt",
           ("tests/checks/test_drift.py",)),
    Mutant("ks p-value drifts below, not at, the threshold", "monitor/checks/stattests.py",
           "_P_LE, _P_LT, _DIST = operator.le, operator.lt, operator.ge",
           "_P_LE, _P_LT, _DIST = operator.lt, operator.lt, operator.ge",
           ("tests/checks/test_drift.py",)),
    Mutant("token compared case-insensitively", "monitor/serve/api.py",
           "hmac.compare_digest(", "_casefold_compare(",
           ("tests/serve/test_api.py",)),
    Mutant("drift share limit exclusive", "monitor/checks/drift.py",
           "share >= config.drift_share", "share > config.drift_share",
           ("tests/checks/test_drift.py",)),
    Mutant("an error section outranks a critical one", "monitor/results.py",
           '"error": 2, "critical": 3}', '"error": 4, "critical": 3}',
           ("tests/run/test_check_run.py::"
            "test_a_critical_section_outranks_a_check_that_cannot_run",)),
    Mutant("the flag trips one run late", "monitor/policy.py",
           "bad >= rules.trip_after", "bad > rules.trip_after",
           ("tests/test_policy.py",)),
    # Hand-overs and hang guards, asserted on what the store records and on what the
    # caller got, not on how long it took.
    Mutant("a lapsed lease is taken a second before it expires", "monitor/store/locks.py",
           _LAPSED_TO_ACQUIRE, _LAPSED_TO_ACQUIRE.replace(
               "expires_at <= {_NOW})", "expires_at <= {_NOW} + interval '1 second')"),
           ("tests/serve/test_leases.py::test_a_lease_not_renewed_lapses_and_is_taken_over",),
           postgres=True),
    Mutant("a dead replica's leases wait for their expiry", "monitor/store/locks.py",
           "AND pg_try_advisory_xact_lock(lock_key) RETURNING replica",
           "AND false RETURNING replica",
           ("tests/serve/test_serve.py::"
            "test_a_killed_leader_is_replaced_and_no_window_is_lost_or_doubled",),
           postgres=True),
    Mutant("a timed-out call waits for the model before answering",
           "clients/python/src/mqm_client/guard.py",
           "call.abandoned = True  # skipped", "call.abandoned = call.done.acquire()  # skipped",
           ("tests/client/test_client_fallback.py::"
            "test_timeout_answers_the_default_and_discards_the_late_result",)),
    Mutant("the shadow call runs on the caller's thread", "clients/python/src/mqm_client/guard.py",
           "shadow_pool.submit(Call(", "(lambda call: call.run())(Call(",
           ("tests/client/test_client_fallback.py::"
            "test_shadow_call_logs_the_models_prediction_and_the_caller_does_not_wait",)),
    Mutant("late runs piled up, not coalesced", "monitor/serve/scheduler.py",
           '"coalesce": True', '"coalesce": False',
           ("tests/serve/test_scheduler.py::test_late_runs_are_coalesced_not_piled_up",)),
    Mutant("the guard's workers keep the process alive", "clients/python/src/mqm_client/pool.py",
           "daemon=True", "daemon=False",
           ("tests/client/test_client_fallback.py::"
            "test_the_threads_do_not_keep_the_process_alive",)),
)

# Helps the token mutant: compares the way a careless implementation would.
_CASEFOLD = '''

def _casefold_compare(a, b):  # planted by bench/mutants.py
    a = a.decode() if isinstance(a, bytes) else a
    b = b.decode() if isinstance(b, bytes) else b
    return a.casefold() == b.casefold()
'''


def run(mutant: Mutant, tree: Path) -> tuple[bool, str, float]:
    """Apply the mutant in ``tree``, run its tests; (killed, what said so, seconds)."""
    target = tree / mutant.path
    original = target.read_text()
    if mutant.old not in original:
        return False, f"NOT APPLIED: {mutant.old!r} is not in {mutant.path}", 0.0
    mutated = original.replace(mutant.old, mutant.new, 1)
    if "_casefold_compare(" in mutant.new:
        mutated += _CASEFOLD
    target.write_text(mutated)
    started = time.monotonic()
    try:
        # The client's package lives under clients/python/src (issue 14).
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "clients/python/src")])}
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *mutant.tests], cwd=tree, env=env, capture_output=True, text=True)
    finally:
        target.write_text(original)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    return done.returncode != 0, (failed[0] if failed else done.stdout.strip().splitlines()[-1]
                                  if done.stdout.strip() else done.stderr[-300:]), (
        time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutant names (substrings)")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "*.db", ".pytest_cache", ".ruff_cache"))
        killed = ran = 0
        for mutant in chosen:
            if mutant.postgres and not os.environ.get("MQM_TEST_POSTGRES_URL"):
                print(f"SKIPPED  {mutant.name}: set MQM_TEST_POSTGRES_URL to run its tests",
                      flush=True)
                continue
            dead, why, seconds = run(mutant, tree)
            killed += dead
            ran += 1
            print(f"{'KILLED  ' if dead else 'SURVIVED'} {mutant.name} ({seconds:.0f} s): {why}",
                  flush=True)
    print(f"{killed} of {ran} mutants killed ({killed / max(ran, 1):.0%})"
          + (f", {len(chosen) - ran} skipped" if ran < len(chosen) else ""))


if __name__ == "__main__":
    main()
