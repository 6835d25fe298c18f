"""Deterministic sample data for the loan-default model (see README.md next to this file).

Writes three zstd-compressed Parquet files:

* ``reference.parquet``       - 10,000 labelled rows from September 2026, one column per feature.
* ``production_logs.parquet`` - two weeks of inference logs (features as JSON text), with a
  covariate + concept drift from 2026-10-08 and a few dozen malformed requests.
* ``labels.parquet``          - late-arriving ground truth for the production requests.

Usage: ``python sample_data/generate.py [--out DIR] [--seed N]``. Importable: ``generate(seed)``
returns the frames without touching the disk, so tests can regenerate and compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SEED = 7
MODEL_VERSION = "1.4.0"
# Version 1.5.0 serves a share of the traffic from ROLLOUT_START (a canary that stays): it
# scores stretched borrowers and unknown home ownership as safer, which the drift punishes.
NEW_VERSION = "1.5.0"
ROLLOUT_START = pd.Timestamp("2026-10-09T00:00:00Z")
ROLLOUT_SHARE = 0.5

REFERENCE_START = pd.Timestamp("2026-09-01T00:00:00Z")
REFERENCE_DAYS = 30
REFERENCE_ROWS = 10_000

PRODUCTION_START = pd.Timestamp("2026-10-01T00:00:00Z")
PRODUCTION_DAYS = 14
ROWS_PER_DAY = 3_000
DRIFT_START = pd.Timestamp("2026-10-08T00:00:00Z")
DRIFT_RAMP = pd.Timedelta(days=2)
LABEL_CUTOFF = pd.Timestamp("2026-10-20T00:00:00Z")

ERROR_RATE = 0.002
UNLABELLED_RATE = 0.10

# Mirrors schemas/loan_default.yaml; kept inline so the script needs no YAML parser.
FEATURES: dict[str, dict[str, Any]] = {
    "age": {"type": "int", "nullable": False, "min": 18, "max": 100},
    "annual_income": {"type": "float", "nullable": False, "min": 0, "max": None},
    "loan_amount": {"type": "float", "nullable": False, "min": 500, "max": 100_000},
    "credit_score": {"type": "int", "nullable": False, "min": 300, "max": 850},
    "debt_to_income": {"type": "float", "nullable": False, "min": 0, "max": 1.5},
    "employment_years": {"type": "float", "nullable": True, "min": 0, "max": 60},
    "open_accounts": {"type": "int", "nullable": False, "min": 0, "max": 60},
    "home_ownership": {
        "type": "category",
        "nullable": False,
        "allowed": ["RENT", "MORTGAGE", "OWN"],
    },
    "loan_purpose": {
        "type": "category",
        "nullable": False,
        "allowed": [
            "debt_consolidation",
            "credit_card",
            "home_improvement",
            "car",
            "medical",
            "other",
        ],
    },
    "has_cosigner": {"type": "bool", "nullable": False},
    "application_channel": {"type": "string", "nullable": True},
}
FEATURE_NAMES = list(FEATURES)

PURPOSE_P = [0.38, 0.21, 0.12, 0.12, 0.05, 0.12]
# Mostly clean channel names plus a few free-text variants, as a real upstream would send.
CHANNELS = ["web", "mobile", "branch", "partner", "Web", "mobile-app", "call center", None]
CHANNEL_P = [0.48, 0.28, 0.11, 0.07, 0.015, 0.015, 0.01, 0.02]

ERROR_MESSAGES = [
    "timeout calling feature store",
    "model server returned HTTP 503",
    "connection reset by upstream",
]
ERROR_MESSAGE_P = [0.6, 0.25, 0.15]

# Hidden "true" model. Values are logit contributions; numeric terms are centred near the
# reference means so the intercept is roughly the logit of the typical applicant.
TRUE_COEF: dict[str, Any] = {
    "intercept": -2.1,
    "credit_score": -0.0165,
    "debt_to_income": 3.6,
    "log_income": -0.45,
    "log_loan_to_income": 0.85,
    "age": -0.015,
    "employment_years": -0.035,
    "employment_missing": 0.3,
    "open_accounts": 0.03,
    "has_cosigner": -0.7,
    "home_ownership": {"RENT": 0.3, "MORTGAGE": 0.0, "OWN": -0.15, "OTHER": 0.6},
    "loan_purpose": {
        "debt_consolidation": 0.15,
        "credit_card": 0.1,
        "home_improvement": -0.15,
        "car": -0.25,
        "medical": 0.35,
        "other": 0.1,
    },
}
# Covariate drift at full strength (scaled by the 0..1 drift ramp from DRIFT_START).
COVARIATE_SHIFT = {
    "income_factor": 0.75,
    "credit_score": -40.0,
    "debt_to_income": 0.05,
    "home_other_share": 0.08,
}
# Concept change after DRIFT_START (scaled by the same ramp), invisible to the deployed formula:
# stretched borrowers (debt_to_income above the knee) default far more, and credit scores lag the
# shock, so the true credit_score slope flattens from -0.0165 to -0.0045 per point.
CONCEPT_SHIFT = {"intercept": 0.5, "dti_excess": 6.0, "dti_knee": 0.35, "credit_score": 0.012}

# Deployed model v1.4.0: fitted on older data, so close to but not equal to the truth. It ignores
# open_accounts and missingness of employment_years, and unknown categories contribute 0.
DEPLOYED_COEF: dict[str, Any] = {
    "intercept": -2.1,
    "credit_score": -0.015,
    "debt_to_income": 3.3,
    "log_income": -0.5,
    "log_loan_to_income": 0.8,
    "age": -0.012,
    "employment_years": -0.03,
    "employment_missing": 0.0,
    "open_accounts": 0.0,
    "has_cosigner": -0.6,
    "home_ownership": {"RENT": 0.25, "MORTGAGE": 0.0, "OWN": -0.1},
    "loan_purpose": {
        "debt_consolidation": 0.1,
        "credit_card": 0.1,
        "home_improvement": -0.1,
        "car": -0.2,
        "medical": 0.3,
        "other": 0.1,
    },
}
# What the serving layer substitutes for a null or wrongly typed value (training medians/modes).
IMPUTE: dict[str, Any] = {
    "age": 42,
    "annual_income": 49_000.0,
    "loan_amount": 10_800.0,
    "credit_score": 685,
    "debt_to_income": 0.31,
    "employment_years": 8.5,
    "open_accounts": 5,
    "has_cosigner": False,
}

# Malformed requests injected into the production JSON: (week, kind, rows). Each row gets at most
# one defect, and never an errored request, so counts are exact.
INJECTIONS: list[tuple[int, str, int]] = [
    (1, "income_thousands_str", 1),
    (1, "open_accounts_float", 1),
    (1, "cosigner_yes_str", 1),
    (1, "credit_score_900", 1),
    (1, "null_credit_score", 1),
    (2, "income_na_str", 8),
    (2, "income_thousands_str", 7),
    (2, "open_accounts_float", 10),
    (2, "cosigner_yes_str", 5),
    (2, "cosigner_no_str", 4),
    (2, "age_150", 2),
    (2, "credit_score_900", 2),
    (2, "dti_2_4", 1),
    (2, "loan_amount_250k", 1),
    (2, "null_credit_score", 2),
    (2, "null_annual_income", 1),
    (2, "null_age", 1),
    (2, "null_home_ownership", 1),
]

# Requests per minute of the UTC day: peak mid-afternoon, trough around 03:00 (about 7x lower).
_MINUTE = np.arange(24 * 60)
_CYCLE = 1.0 + 0.75 * np.cos(2 * np.pi * (_MINUTE / 60 - 15) / 24)
_CYCLE_P = _CYCLE / _CYCLE.sum()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _timestamps(
    rng: np.random.Generator, start: pd.Timestamp, day_counts: np.ndarray
) -> pd.DatetimeIndex:
    """Sorted UTC timestamps (ms resolution) following the daily traffic cycle."""
    day = np.repeat(np.arange(day_counts.size), day_counts)
    minute = rng.choice(_MINUTE.size, size=day.size, p=_CYCLE_P)
    ms = rng.integers(0, 60_000, size=day.size)
    offset = np.sort(day * 86_400_000 + minute * 60_000 + ms)
    return start + pd.to_timedelta(offset, unit="ms")


def _drift_level(ts: pd.DatetimeIndex) -> np.ndarray:
    """0 before DRIFT_START, linear ramp to 1 over DRIFT_RAMP, 1 afterwards."""
    return np.clip((ts - DRIFT_START) / DRIFT_RAMP, 0.0, 1.0).to_numpy(dtype=float)


def _sample_applicants(rng: np.random.Generator, drift: np.ndarray) -> pd.DataFrame:
    """Clean, in-contract feature rows; ``drift`` in [0, 1] per row shifts the population."""
    n = drift.size
    age = np.clip(np.rint(rng.normal(42, 12.5, n)), 18, 95).astype(np.int64)
    a = (age - 42) / 12.5
    # Income peaks in mid career; lognormal noise gives the long right tail.
    log_inc = 10.8 + 0.25 * a - 0.12 * a**2 + rng.normal(0, 0.5, n)
    zi = (log_inc - 10.8) / 0.5
    base_income = np.exp(log_inc)
    income = np.round(base_income * (1 - (1 - COVARIATE_SHIFT["income_factor"]) * drift), -1)
    credit = np.clip(
        685 + 18 * a + 20 * zi + rng.normal(0, 55, n) + COVARIATE_SHIFT["credit_score"] * drift,
        300,
        850,
    )
    dti = np.clip(
        rng.beta(3, 7, n) * 1.05 - 0.03 * zi + COVARIATE_SHIFT["debt_to_income"] * drift, 0, 1.5
    )
    # Loan size follows pre-drift income: people ask for the same loans on lower incomes.
    loan = np.clip(
        np.round(base_income * np.exp(rng.normal(np.log(0.22), 0.5, n)) / 50) * 50, 500, 100_000
    )
    employment = np.round(np.clip((age - 18) * rng.beta(2, 3, n), 0, 60), 1)
    employment[rng.random(n) < 0.03] = np.nan
    open_accounts = np.clip(rng.poisson(2.5 + 0.09 * (age - 18)), 0, 60).astype(np.int64)

    rent = rng.random(n) < _sigmoid(-0.5 - 1.0 * a - 0.5 * zi)
    own = rng.random(n) < np.clip(0.22 + 0.12 * a, 0.05, 0.7)
    home = np.where(rent, "RENT", np.where(own, "OWN", "MORTGAGE")).astype(object)
    # "OTHER" is not in the contract's allowed values: the schema violation the drift brings.
    home[rng.random(n) < COVARIATE_SHIFT["home_other_share"] * drift] = "OTHER"

    purposes = FEATURES["loan_purpose"]["allowed"]
    purpose = np.asarray(purposes, dtype=object)[rng.choice(len(purposes), size=n, p=PURPOSE_P)]
    cosigner = rng.random(n) < _sigmoid(-2.6 - 0.01 * (credit - 685))
    channel = np.asarray(CHANNELS, dtype=object)[rng.choice(len(CHANNELS), size=n, p=CHANNEL_P)]

    return pd.DataFrame(
        {
            "age": age,
            "annual_income": income.astype(np.float64),
            "loan_amount": loan.astype(np.float64),
            "credit_score": np.rint(credit).astype(np.int64),
            "debt_to_income": np.round(dti, 3),
            "employment_years": employment,
            "open_accounts": open_accounts,
            "home_ownership": home,
            "loan_purpose": purpose,
            "has_cosigner": cosigner,
            "application_channel": channel,
        }
    )


def _logit(x: pd.DataFrame, coef: dict[str, Any]) -> np.ndarray:
    """Shared logistic formula; ``x`` holds numeric columns as float and categories as str/None."""
    income = np.maximum(x["annual_income"].to_numpy(float), 1_000.0)  # income 0 is legal
    emp = x["employment_years"].to_numpy(float)
    emp_missing = np.isnan(emp)
    z = (
        coef["intercept"]
        + coef["credit_score"] * (x["credit_score"].to_numpy(float) - 685)
        + coef["debt_to_income"] * (x["debt_to_income"].to_numpy(float) - 0.33)
        + coef["log_income"] * (np.log(income) - 10.8)
        + coef["log_loan_to_income"]
        * (np.log(x["loan_amount"].to_numpy(float) / income) - np.log(0.22))
        + coef["age"] * (x["age"].to_numpy(float) - 42)
        + coef["employment_years"] * (np.where(emp_missing, IMPUTE["employment_years"], emp) - 8)
        + coef["employment_missing"] * emp_missing
        + coef["open_accounts"] * (x["open_accounts"].to_numpy(float) - 6)
        + coef["has_cosigner"] * x["has_cosigner"].to_numpy(bool)
    )
    for col in ("home_ownership", "loan_purpose"):
        z = z + x[col].map(coef[col]).fillna(0.0).to_numpy(float)
    return z


def _true_proba(x: pd.DataFrame, drift: np.ndarray) -> np.ndarray:
    dti = x["debt_to_income"].to_numpy(float)
    shift = (
        CONCEPT_SHIFT["intercept"]
        + CONCEPT_SHIFT["dti_excess"] * np.maximum(dti - CONCEPT_SHIFT["dti_knee"], 0.0)
        + CONCEPT_SHIFT["credit_score"] * (x["credit_score"].to_numpy(float) - 685)
    )
    return _sigmoid(_logit(x, TRUE_COEF) + drift * shift)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _model_inputs(records: list[dict[str, Any]]) -> pd.DataFrame:
    """What the serving layer feeds the formula: nulls and wrong types imputed, numbers clipped
    to the contract range, categories passed through (unknown ones later contribute 0)."""
    cols: dict[str, list[Any]] = {}
    for name, spec in FEATURES.items():
        values = [r[name] for r in records]
        if spec["type"] in ("int", "float"):
            lo = spec["min"]
            hi = spec["max"] if spec["max"] is not None else np.inf
            keep_null = name == "employment_years"  # the formula has its own missing term
            cols[name] = [
                float(min(max(v, lo), hi))
                if _is_number(v)
                else (np.nan if keep_null and v is None else float(IMPUTE[name]))
                for v in values
            ]
        elif spec["type"] == "bool":
            cols[name] = [v if isinstance(v, bool) else IMPUTE[name] for v in values]
        else:
            cols[name] = [v if isinstance(v, str) else None for v in values]
    return pd.DataFrame(cols)


# Version 1.5.0: 1.4.0's formula, retrained on data with few stretched borrowers: it takes
# debt_to_income above the knee as less risky, and the unknown home ownership OTHER as
# owning outright. Elsewhere it scores as 1.4.0 does.
NEW_VERSION_COEF: dict[str, Any] = {
    **DEPLOYED_COEF,
    "home_ownership": {**DEPLOYED_COEF["home_ownership"], "OTHER": -1.5},
}
NEW_VERSION_DTI_EXCESS = -5.0  # per unit of debt_to_income above CONCEPT_SHIFT["dti_knee"]


def _deployed_proba(records: list[dict[str, Any]], version: str = MODEL_VERSION) -> np.ndarray:
    x = _model_inputs(records)
    if version == MODEL_VERSION:
        return np.round(_sigmoid(_logit(x, DEPLOYED_COEF)), 6)
    excess = np.maximum(x["debt_to_income"].to_numpy(float) - CONCEPT_SHIFT["dti_knee"], 0.0)
    return np.round(_sigmoid(_logit(x, NEW_VERSION_COEF) + NEW_VERSION_DTI_EXCESS * excess), 6)


def _to_records(x: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain-Python dicts in schema order (NaN -> None) so json.dumps needs no custom encoder."""
    columns = []
    for name in FEATURE_NAMES:
        values = x[name].tolist()
        if FEATURES[name]["type"] == "float":
            values = [None if v != v else v for v in values]  # NaN != NaN
        columns.append(values)
    return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in zip(*columns, strict=True)]


def _inject(
    rng: np.random.Generator,
    records: list[dict[str, Any]],
    week: np.ndarray,
    eligible: np.ndarray,
) -> None:
    """Corrupt records in place according to INJECTIONS."""
    taken = ~eligible
    for wk, kind, count in INJECTIONS:
        pool = (week == wk) & ~taken
        if kind.startswith("cosigner_"):
            # The string mirrors the applicant's real answer; "yes" needs an actual cosigner.
            want = kind == "cosigner_yes_str"
            pool &= np.array([r["has_cosigner"] is want for r in records])
        pool = np.flatnonzero(pool)
        rows = np.sort(rng.choice(pool, size=count, replace=False))
        taken[rows] = True
        for i in rows:
            r = records[i]
            if kind == "income_na_str":
                r["annual_income"] = "N/A"
            elif kind == "income_thousands_str":
                r["annual_income"] = f"{r['annual_income']:,.0f}"
            elif kind == "open_accounts_float":
                # +0.1..0.9 keeps it visibly non-integral (e.g. 3.7).
                r["open_accounts"] = round(r["open_accounts"] + int(rng.integers(1, 10)) / 10, 1)
            elif kind == "cosigner_yes_str":
                r["has_cosigner"] = "yes"
            elif kind == "cosigner_no_str":
                r["has_cosigner"] = "no"
            elif kind == "age_150":
                r["age"] = 150
            elif kind == "credit_score_900":
                r["credit_score"] = 900
            elif kind == "dti_2_4":
                r["debt_to_income"] = 2.4
            elif kind == "loan_amount_250k":
                r["loan_amount"] = 250_000.0
            elif kind.startswith("null_"):
                r[kind.removeprefix("null_")] = None
            else:  # pragma: no cover - guards typos in INJECTIONS
                raise ValueError(kind)


def _reference(rng: np.random.Generator) -> pd.DataFrame:
    day_counts = rng.multinomial(REFERENCE_ROWS, np.full(REFERENCE_DAYS, 1 / REFERENCE_DAYS))
    ts = _timestamps(rng, REFERENCE_START, day_counts)
    drift = np.zeros(REFERENCE_ROWS)
    x = _sample_applicants(rng, drift)
    defaulted = (rng.random(REFERENCE_ROWS) < _true_proba(x, drift)).astype(np.int64)
    proba_1 = _deployed_proba(_to_records(x))
    out = pd.DataFrame(
        {
            "request_id": [f"ref-{i:06d}" for i in range(1, REFERENCE_ROWS + 1)],
            "timestamp": ts,
        }
    )
    out = pd.concat([out, x], axis=1)
    out["prediction"] = (proba_1 >= 0.5).astype(np.int64)
    out["proba_0"] = np.round(1 - proba_1, 6)
    out["proba_1"] = proba_1
    out["defaulted"] = defaulted
    return out


def _production(
    rng_traffic: np.random.Generator,
    rng_features: np.random.Generator,
    rng_ops: np.random.Generator,
    rng_labels: np.random.Generator,
    rng_rollout: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    day_counts = rng_traffic.poisson(ROWS_PER_DAY, PRODUCTION_DAYS)
    ts = _timestamps(rng_traffic, PRODUCTION_START, day_counts)
    n = len(ts)
    drift = _drift_level(ts)
    week = np.where(ts < DRIFT_START, 1, 2)

    x = _sample_applicants(rng_features, drift)
    defaulted = (rng_features.random(n) < _true_proba(x, drift)).astype(np.int64)

    error = rng_ops.random(n) < ERROR_RATE
    message = np.asarray(ERROR_MESSAGES, dtype=object)[
        rng_ops.choice(len(ERROR_MESSAGES), size=n, p=ERROR_MESSAGE_P)
    ]
    # Latency: lognormal body, 2% slow tail, a little load sensitivity, +25% once drift lands.
    minute_of_day = (ts.hour * 60 + ts.minute).to_numpy()
    load = _CYCLE[minute_of_day] / _CYCLE.max()
    latency = rng_ops.lognormal(np.log(26), 0.35, n) * (1 + 0.15 * load) * (1 + 0.25 * drift)
    slow = rng_ops.random(n) < 0.02
    latency = np.where(slow, latency * rng_ops.uniform(3, 10, n), latency)
    timeout = error & (message == ERROR_MESSAGES[0])
    latency = np.where(timeout, 800 + rng_ops.exponential(15, n), latency)

    records = _to_records(x)
    _inject(rng_ops, records, week, eligible=~error)
    proba_1 = _deployed_proba(records)
    # The rollout: a share of the requests from ROLLOUT_START go to the new version.
    new = np.asarray(ts >= ROLLOUT_START) & (rng_rollout.random(n) < ROLLOUT_SHARE)
    proba_1[new] = _deployed_proba([records[i] for i in np.flatnonzero(new)], NEW_VERSION)
    version = np.where(new, NEW_VERSION, MODEL_VERSION).astype(object)

    logs = pd.DataFrame(
        {
            "request_id": [f"req-{i:07d}" for i in range(1, n + 1)],
            "timestamp": ts,
            "model_version": version,
            "features": [json.dumps(r, separators=(",", ":")) for r in records],
            "prediction": pd.array(np.where(error, pd.NA, proba_1 >= 0.5), dtype="Int64"),
            "proba_0": np.where(error, np.nan, np.round(1 - proba_1, 6)),
            "proba_1": np.where(error, np.nan, proba_1),
            "latency_ms": np.round(latency, 3),
            "error": error,
            "error_message": np.where(error, message, None),
        }
    )

    # Labels arrive 2-6 days later (right-skewed); 10% never arrive; none for failed requests.
    delay = pd.to_timedelta(
        np.rint((2 + 4 * rng_labels.beta(2, 5, n)) * 86_400).astype(np.int64), unit="s"
    )
    arrived = ts + delay
    keep = ~error & (rng_labels.random(n) >= UNLABELLED_RATE) & (arrived < LABEL_CUTOFF)
    labels = pd.DataFrame(
        {
            "request_id": logs["request_id"][keep].to_numpy(),
            "defaulted": defaulted[keep],
            "timestamp": arrived[keep],
        }
    )
    labels = labels.sort_values(["timestamp", "request_id"], kind="stable").reset_index(drop=True)
    return logs, labels


def generate(seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Build all frames in memory; same seed gives identical frames."""
    # Independent streams, so tweaking one part (e.g. latency) leaves the others unchanged.
    # The sixth stream (the rollout) came later; the first five are what they were.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    logs, labels = _production(*rngs[1:])
    return {"reference": _reference(rngs[0]), "production_logs": logs, "labels": labels}


def audit_features(logs: pd.DataFrame) -> pd.DataFrame:
    """Contract violations found in the ``features`` JSON, per week, field and issue."""
    found: list[tuple[int, str, str]] = []
    weeks = np.where(logs["timestamp"] < DRIFT_START, 1, 2)
    for wk, text in zip(weeks, logs["features"], strict=True):
        row = json.loads(text)
        for name, spec in FEATURES.items():
            v = row.get(name)
            kind = spec["type"]
            if v is None:
                if not spec["nullable"]:
                    found.append((wk, name, "null"))
                continue
            ok_type = (
                (kind == "int" and isinstance(v, int) and not isinstance(v, bool))
                or (kind == "float" and _is_number(v))
                or (kind == "bool" and isinstance(v, bool))
                or (kind in ("category", "string") and isinstance(v, str))
            )
            if not ok_type:
                found.append((wk, name, "wrong_type"))
            elif kind in ("int", "float"):
                hi = spec["max"] if spec["max"] is not None else np.inf
                if not spec["min"] <= v <= hi:
                    found.append((wk, name, "out_of_range"))
            elif kind == "category" and v not in spec["allowed"]:
                found.append((wk, name, f"unknown_category:{v}"))
    df = pd.DataFrame(found, columns=["week", "field", "issue"])
    return df.value_counts(["week", "field", "issue"]).sort_index().rename("rows").reset_index()


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney rank statistic (ties get average ranks)."""
    ranks = pd.Series(score).rank().to_numpy()
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summarize(frames: dict[str, pd.DataFrame]) -> str:
    ref, logs, labels = frames["reference"], frames["production_logs"], frames["labels"]
    lines = [f"{name}: {len(df):,} rows" for name, df in frames.items()]
    acc = (ref["prediction"] == ref["defaulted"]).mean()
    auc = _auc(ref["defaulted"].to_numpy(), ref["proba_1"].to_numpy())
    lines.append(
        f"reference: default rate {ref['defaulted'].mean():.3f}, "
        f"accuracy {acc:.3f}, ROC AUC {auc:.3f}, predicted positive {ref['prediction'].mean():.3f}"
    )
    joined = logs.merge(labels[["request_id", "defaulted"]], on="request_id", how="inner")
    joined["day"] = joined["timestamp"].dt.strftime("%Y-%m-%d")
    joined["week"] = np.where(joined["timestamp"] < DRIFT_START, 1, 2)
    joined["correct"] = joined["prediction"].astype(int) == joined["defaulted"]
    logs_week = np.where(logs["timestamp"] < DRIFT_START, 1, 2)
    for wk, g in joined.groupby("week"):
        in_week = logs_week == wk
        auc = _auc(g["defaulted"].to_numpy(), g["proba_1"].to_numpy())
        lines.append(
            f"week {wk}: {in_week.sum():,} requests, {g.shape[0]:,} labelled, "
            f"default rate {g['defaulted'].mean():.3f}, accuracy {g['correct'].mean():.3f}, "
            f"ROC AUC {auc:.3f}, errors {logs['error'][in_week].sum()}, "
            f"median latency {logs['latency_ms'][in_week].median():.1f} ms"
        )
    lines.append("per day (requests / labelled / default rate / accuracy):")
    per_day = joined.groupby("day").agg(
        labelled=("request_id", "size"), rate=("defaulted", "mean"), acc=("correct", "mean")
    )
    requests = logs["timestamp"].dt.strftime("%Y-%m-%d").value_counts()
    for day, r in per_day.iterrows():
        lines.append(
            f"  {day}  {requests[day]:5d}  {int(r.labelled):5d}  {r.rate:.3f}  {r.acc:.3f}"
        )
    for wk in (1, 2):
        kinds = ", ".join(f"{kind} x{count}" for w, kind, count in INJECTIONS if w == wk)
        lines.append(f"injected in week {wk}: {kinds}")
    lines.append("contract violations in production features JSON (week, field, issue, rows):")
    for r in audit_features(logs).itertuples(index=False):
        lines.append(f"  {r.week}  {r.field:<17} {r.issue:<24} {r.rows}")
    return "\n".join(lines)


def write(frames: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in frames.items():
        path = out / f"{name}.parquet"
        # No wall-clock metadata is written, so output is byte-stable for fixed library versions.
        df.to_parquet(path, engine="pyarrow", compression="zstd", compression_level=9, index=False)
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    frames = generate(args.seed)
    paths = write(frames, args.out)
    print(summarize(frames))
    total = 0
    for path in paths.values():
        size = path.stat().st_size
        total += size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path.name}: {size / 1024:,.1f} KiB  sha256:{digest}")
    print(f"total: {total / 1024:,.1f} KiB")


if __name__ == "__main__":
    main()
