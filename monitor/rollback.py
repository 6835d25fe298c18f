"""Model versions over stored windows: each version's figures added up, which recent
version is best on the evidence, and whether to roll back when the flag trips.

Pure and standard library only (the API and the CLI read it without pandas): the store
gives the per-window figures (``monitor.store.versions``), this module weighs them.

Versions are compared on the windows that both served, so that both saw the same
traffic: a version rolled out while the inputs drift must not look worse only because
it came later. Realized accuracy (mature windows only) is compared with a two-proportion
z-test; without mature labels the CBPE estimate is compared with a z-test on its sampling
errors. A difference that is not significant at ``alpha`` is "no evidence".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from monitor.times import iso_z

__all__ = [
    "ALPHA",
    "RECENT_WINDOWS",
    "Evidence",
    "VersionSummary",
    "VersionVerdict",
    "VersionWindow",
    "compare",
    "estimate_test",
    "rollback_advice",
    "summarize",
    "two_proportion_test",
    "verdict",
]

ALPHA = 0.05
RECENT_WINDOWS = 7  # a version is recent when it served in one of the newest windows
MIN_LABELLED = 100  # labelled rows each version needs before its accuracy is compared

Basis = Literal["accuracy", "estimated_accuracy", "none"]


@dataclass(frozen=True)
class VersionWindow:
    """One version's figures in one window (its latest check run)."""

    run_id: int
    window_start: datetime
    window_end: datetime
    status: str  # the run's
    mature: bool  # the window's labels
    version: str
    figures: dict[str, float | None]

    def figure(self, name: str) -> float:
        value = self.figures.get(name)
        return 0.0 if value is None else float(value)


@dataclass(frozen=True)
class VersionSummary:
    """One version over the stored windows: when it served and its figures added up.

    ``accuracy``: correct over labelled rows of the mature windows; ``ok_accuracy``: the
    same over the windows whose run was ok. The estimate is the row-weighted mean of the
    windows' estimates, its sampling error theirs combined; ``latency_p95_ms`` the
    row-weighted mean of the windows' p95.
    """

    version: str
    first_seen: datetime  # start of its first window
    last_seen: datetime  # end of its last window
    windows: int
    rows: int
    errors: int
    error_rate: float
    latency_p95_ms: float | None
    labelled_rows: int
    correct: int
    accuracy: float | None
    ok_windows: int
    ok_accuracy: float | None
    estimated_accuracy: float | None
    estimated_sampling_error: float | None
    prediction_drifted_windows: int
    prediction_tested_windows: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # As the API serves times: UTC with a Z.
        out["first_seen"], out["last_seen"] = iso_z(self.first_seen), iso_z(self.last_seen)
        return out


@dataclass(frozen=True)
class Evidence:
    """Two versions compared over ``windows`` windows: ``better`` when significant."""

    a: str
    b: str
    basis: Basis
    windows: int
    shared: bool  # over the windows both served (else: each over its own windows)
    rows_a: int
    rows_b: int
    value_a: float | None
    value_b: float | None
    p_value: float | None
    better: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionVerdict:
    """Which recent version is best on the evidence (None: no evidence), how sure (the
    largest p-value of its comparisons with the other recent versions), and why."""

    best: str | None
    basis: Basis
    p_value: float | None
    recent: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    text: str
    alpha: float = ALPHA
    versions: tuple[VersionSummary, ...] = field(default=())

    @property
    def confidence(self) -> float | None:
        return None if self.p_value is None else 1.0 - self.p_value

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best, "basis": self.basis, "p_value": self.p_value,
                "confidence": self.confidence, "alpha": self.alpha,
                "recent": list(self.recent), "text": self.text,
                "evidence": [e.as_dict() for e in self.evidence],
                "versions": [v.as_dict() for v in self.versions]}


# --- statistics -----------------------------------------------------------------------


def _two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def two_proportion_test(correct_a: int, rows_a: int, correct_b: int, rows_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (the chi-squared test of the
    2x2 table without continuity correction). Raises ``ValueError`` on an empty side."""
    if rows_a <= 0 or rows_b <= 0:
        raise ValueError("both proportions need at least one row")
    pa, pb = correct_a / rows_a, correct_b / rows_b
    pooled = (correct_a + correct_b) / (rows_a + rows_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / rows_a + 1.0 / rows_b))
    if se == 0.0:  # both all right or all wrong: no difference to test
        return 1.0
    return _two_sided((pa - pb) / se)


def estimate_test(value_a: float, error_a: float, value_b: float, error_b: float
                  ) -> float | None:
    """Two-sided p-value of the difference of two independent estimates with their
    standard (sampling) errors; None when both errors are zero."""
    spread = math.hypot(error_a, error_b)
    if not spread > 0.0:
        return None
    return _two_sided((value_a - value_b) / spread)


# --- adding up ------------------------------------------------------------------------


def _estimate(rows: Sequence[VersionWindow]) -> tuple[float | None, float | None, int]:
    """Row-weighted estimate of these windows, its combined sampling error, and rows."""
    used = [r for r in rows if r.figures.get("estimated_accuracy") is not None
            and r.figure("estimated_rows") > 0]
    total = sum(r.figure("estimated_rows") for r in used)
    if not total:
        return None, None, 0
    value = sum(r.figure("estimated_rows") * r.figure("estimated_accuracy") for r in used) / total
    error = math.sqrt(sum((r.figure("estimated_rows") / total * r.figure(
        "estimated_sampling_error")) ** 2 for r in used))
    return value, error, int(total)


def _counts(rows: Iterable[VersionWindow]) -> tuple[int, int]:
    """Correct and labelled rows of the mature windows among ``rows``."""
    mature = [r for r in rows if r.mature]
    return (int(sum(r.figure("correct") for r in mature)),
            int(sum(r.figure("labelled_rows") for r in mature)))


def summarize(rows: Iterable[VersionWindow]) -> list[VersionSummary]:
    """Each version's figures over its windows, the version first seen first."""
    by_version: dict[str, list[VersionWindow]] = {}
    for row in sorted(rows, key=lambda r: r.window_end):
        by_version.setdefault(row.version, []).append(row)
    out = []
    for version, its in by_version.items():
        n = int(sum(r.figure("rows") for r in its))
        errors = int(sum(r.figure("errors") for r in its))
        p95 = [(r.figure("rows"), r.figures["latency_p95_ms"]) for r in its
               if r.figures.get("latency_p95_ms") is not None]
        weight = sum(w for w, _ in p95)
        correct, labelled = _counts(its)
        ok_correct, ok_labelled = _counts(r for r in its if r.status == "ok")
        estimated, error, _ = _estimate(its)
        tested = [r for r in its if r.figures.get("prediction_drifted") is not None]
        out.append(VersionSummary(
            version=version, first_seen=its[0].window_start, last_seen=its[-1].window_end,
            windows=len(its), rows=n, errors=errors, error_rate=errors / n if n else 0.0,
            latency_p95_ms=(sum(w * float(v) for w, v in p95 if v is not None) / weight
                            if weight else None),
            labelled_rows=labelled, correct=correct,
            accuracy=correct / labelled if labelled else None,
            ok_windows=sum(r.status == "ok" for r in its),
            ok_accuracy=ok_correct / ok_labelled if ok_labelled else None,
            estimated_accuracy=estimated, estimated_sampling_error=error,
            prediction_drifted_windows=sum(r.figure("prediction_drifted") > 0 for r in tested),
            prediction_tested_windows=len(tested),
        ))
    return sorted(out, key=lambda s: (s.first_seen, s.version))


# --- comparing ------------------------------------------------------------------------


def compare(rows: Sequence[VersionWindow], a: str, b: str, *, alpha: float = ALPHA,
            min_labelled: int = MIN_LABELLED) -> Evidence:
    """``a`` against ``b`` over the windows both served (each over its own windows when
    they never served together): realized accuracy where each has ``min_labelled``
    labelled rows in mature windows, else the estimate, else nothing to compare."""
    ends = {v: {r.window_end for r in rows if r.version == v} for v in (a, b)}
    both = ends[a] & ends[b]
    shared = bool(both)

    def side(v: str) -> list[VersionWindow]:
        return [r for r in rows if r.version == v and (not shared or r.window_end in both)]

    rows_a, rows_b = side(a), side(b)
    windows = len(both) if shared else len(ends[a] | ends[b])
    (ca, na), (cb, nb) = _counts(rows_a), _counts(rows_b)
    if na >= min_labelled and nb >= min_labelled:
        p = two_proportion_test(ca, na, cb, nb)
        va, vb = ca / na, cb / nb
        return Evidence(a, b, "accuracy", windows, shared, na, nb, va, vb, p,
                        _better(a, b, va, vb, p, alpha))
    (ea, sa, ra), (eb, sb, rb) = _estimate(rows_a), _estimate(rows_b)
    if ea is not None and eb is not None and sa is not None and sb is not None:
        q = estimate_test(ea, sa, eb, sb)
        return Evidence(a, b, "estimated_accuracy", windows, shared, ra, rb, ea, eb, q,
                        None if q is None else _better(a, b, ea, eb, q, alpha))
    return Evidence(a, b, "none", windows, shared, na, nb, None, None, None, None)


def _better(a: str, b: str, va: float, vb: float, p: float, alpha: float) -> str | None:
    if p >= alpha or va == vb:
        return None
    return a if va > vb else b


def _value(summary: VersionSummary) -> float:
    for value in (summary.accuracy, summary.estimated_accuracy):
        if value is not None:
            return value
    return -1.0


def verdict(rows: Sequence[VersionWindow], *, recent_windows: int = RECENT_WINDOWS,
            alpha: float = ALPHA, min_labelled: int = MIN_LABELLED) -> VersionVerdict:
    """Which of the versions that served in the newest ``recent_windows`` windows is best
    on the evidence: the one that beats every other recent version significantly; "no
    evidence" when none does (too few rows, or differences within chance)."""
    summaries = summarize(rows)
    newest = sorted({r.window_end for r in rows}, reverse=True)[:recent_windows]
    recent_set = {r.version for r in rows if r.window_end in set(newest)}
    recent = tuple(s.version for s in summaries if s.version in recent_set)
    if len(recent) < 2:
        text = ("no evidence: no version has served yet" if not recent else
                f"no evidence: {recent[0]} is the only version in the newest "
                f"{len(newest)} windows, nothing to compare it with")
        return VersionVerdict(None, "none", None, recent, (), text, alpha, tuple(summaries))
    # Each pair on the windows both served: the best is the one that beats every other.
    pairs = {(a, b): compare(rows, a, b, alpha=alpha, min_labelled=min_labelled)
             for i, a in enumerate(recent) for b in recent[i + 1:]}
    for top in recent:
        evidence = tuple(_oriented(pairs, top, other) for other in recent if other != top)
        if all(e.better == top for e in evidence):
            p = max(e.p_value for e in evidence if e.p_value is not None)
            cited = "; ".join(_cite(e) for e in evidence)
            return VersionVerdict(top, evidence[0].basis, p, recent, evidence,
                                  f"{top} is best on the evidence: {cited}", alpha,
                                  tuple(summaries))
    # Led by the version with the best figure, for the text.
    lead = max((s for s in summaries if s.version in recent_set), key=_value).version
    evidence = tuple(_oriented(pairs, lead, other) for other in recent if other != lead)
    cited = "; ".join(_cite(e) for e in evidence)
    return VersionVerdict(None, "none", None, recent, evidence,
                          f"no evidence that one version is better: {cited}", alpha,
                          tuple(summaries))


def _oriented(pairs: dict[tuple[str, str], Evidence], a: str, b: str) -> Evidence:
    """The comparison of ``a`` and ``b`` with ``a`` first."""
    if (a, b) in pairs:
        return pairs[(a, b)]
    e = pairs[(b, a)]
    return Evidence(a, b, e.basis, e.windows, e.shared, e.rows_b, e.rows_a, e.value_b,
                    e.value_a, e.p_value, e.better)


def _cite(e: Evidence) -> str:
    where = (f"the {e.windows} window{'s' if e.windows != 1 else ''} both served" if e.shared
             else f"their own windows ({e.windows}; never served together)")
    if e.basis == "none" or e.value_a is None or e.value_b is None:
        return (f"{e.a} vs {e.b}: too few labelled rows ({e.rows_a}, {e.rows_b}; "
                f"{MIN_LABELLED} needed) and no estimate over {where}")
    what = "accuracy" if e.basis == "accuracy" else "estimated accuracy"
    p = "untestable" if e.p_value is None else f"p={e.p_value:.2g}"
    return (f"{what} {e.a} {e.value_a:.3f} vs {e.b} {e.value_b:.3f} over {where} "
            f"({e.rows_a} and {e.rows_b} rows, {p})")


# --- rolling back ---------------------------------------------------------------------


def rollback_advice(rows: Sequence[VersionWindow], current: Sequence[str], *,
                    alpha: float = ALPHA, min_labelled: int = MIN_LABELLED) -> str | None:
    """What to say when the flag trips: the newest version serving now (of ``current``,
    the versions of the window that tripped it), since when, and the latest older
    version that was ok before it, with its accuracy: "consider rolling back". None when
    no older version was ok, or realized accuracy says the newest one does better (an
    estimate that favours it is cited, not obeyed: a drift fools it).

    ``rows`` hold the windows up to and including the current one.
    """
    summaries = {s.version: s for s in summarize(rows)}
    serving = [summaries[v] for v in current if v in summaries]
    if not serving:
        return None
    newest = max(serving, key=lambda s: s.first_seen)
    since = newest.first_seen
    before = [r for r in rows if r.window_end <= since and r.version != newest.version
              and r.status == "ok"]
    if not before:
        return None
    last_ok = max(before, key=lambda r: r.window_end).version
    its = [r for r in before if r.version == last_ok]
    correct, labelled = _counts(its)
    estimated, _, _ = _estimate(its)
    if labelled:
        figure = f"accuracy {correct / labelled:.2f}"
    elif estimated is not None:
        figure = f"estimated accuracy {estimated:.2f}"
    else:
        figure = f"{len(its)} ok window{'s' if len(its) != 1 else ''}"
    evidence = compare(rows, last_ok, newest.version, alpha=alpha, min_labelled=min_labelled)
    if evidence.better == newest.version and evidence.basis == "accuracy":
        return None  # labels say the new version does better: rolling back would not help
    text = (f"version {newest.version} since {since:%Y-%m-%d}; {last_ok} was ok with "
            f"{figure}: consider rolling back")
    if evidence.better == last_ok:
        text += f" ({_cite(evidence)})"
    elif evidence.better == newest.version:
        # Only the estimate favours the new version: confidence-based, it is the figure a
        # drift fools (a model confidently wrong on the new data); labels will tell.
        text += f" (only the estimate favours {newest.version}: {_cite(evidence)})"
    return text
