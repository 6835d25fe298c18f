"""The sample's deployed loan-default model (version 1.4.0), in plain Python.

The formula, coefficients and input handling of ``sample_data/generate.py``
(``DEPLOYED_COEF``, ``IMPUTE``, ``_model_inputs``), so that on the reference set it gives
exactly the reference's ``prediction`` column: normal traffic then shows no prediction
drift, and drift seen by the monitor is the traffic's, not a different model's. Plain
Python rather than numpy or a fitted estimator: it starts in milliseconds and scores one
request in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["FEATURES", "MODEL_VERSION", "predict", "predict_proba"]

MODEL_VERSION = "1.4.0"

# name -> (kind, lowest, highest, imputed value); ranges as in schemas/loan_default.yaml.
FEATURES: dict[str, tuple[str, float, float, Any]] = {
    "age": ("number", 18, 100, 42.0),
    "annual_income": ("number", 0, math.inf, 49_000.0),
    "loan_amount": ("number", 500, 100_000, 10_800.0),
    "credit_score": ("number", 300, 850, 685.0),
    "debt_to_income": ("number", 0, 1.5, 0.31),
    "employment_years": ("number", 0, 60, 8.5),
    "open_accounts": ("number", 0, 60, 5.0),
    "home_ownership": ("category", 0, 0, None),
    "loan_purpose": ("category", 0, 0, None),
    "has_cosigner": ("bool", 0, 0, False),
    "application_channel": ("category", 0, 0, None),
}

_HOME = {"RENT": 0.25, "MORTGAGE": 0.0, "OWN": -0.1}  # unknown categories: 0
_PURPOSE = {"debt_consolidation": 0.1, "credit_card": 0.1, "home_improvement": -0.1,
            "car": -0.2, "medical": 0.3, "other": 0.1}


def _number(features: Mapping[str, Any], name: str) -> float:
    """The value clipped into its range; the imputed value when null, not a number, or not
    finite once clipped (as the deployed serving layer does: a malformed request still
    gets an answer). Infinity (which Python's json reads) and integers past a float's
    range are clipped or imputed: they would make the formula raise."""
    _, low, high, imputed = FEATURES[name]
    value = features.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        clipped = min(max(value, low), high)  # exact for big ints; NaN stays NaN
        try:
            number = float(clipped)
        except OverflowError:  # an integer past 1.8e308 in a range open above
            return imputed
        if math.isfinite(number):
            return number
    return imputed


def predict_proba(features: Mapping[str, Any]) -> float:
    """Probability of default, rounded to 6 decimals as the sample logs it."""
    num = {name: _number(features, name) for name, spec in FEATURES.items()
           if spec[0] == "number"}
    income = max(num["annual_income"], 1_000.0)  # an income of 0 is legal
    cosigner = features.get("has_cosigner")
    z = (-2.1
         - 0.015 * (num["credit_score"] - 685)
         + 3.3 * (num["debt_to_income"] - 0.33)
         - 0.5 * (math.log(income) - 10.8)
         + 0.8 * (math.log(num["loan_amount"] / income) - math.log(0.22))
         - 0.012 * (num["age"] - 42)
         - 0.03 * (num["employment_years"] - 8)
         - 0.6 * (cosigner is True)  # a malformed value counts as no cosigner
         + _HOME.get(str(features.get("home_ownership")), 0.0)
         + _PURPOSE.get(str(features.get("loan_purpose")), 0.0))
    return round(1.0 / (1.0 + math.exp(-z)), 6)


def predict(features: Mapping[str, Any]) -> int:
    """1 (will default) when the probability is at least 0.5, else 0."""
    return int(predict_proba(features) >= 0.5)
