"""mqm's estimated performance against NannyML 0.13.1's CBPE on data that ships in packages.

Run by hand, not by pytest. NannyML cannot be installed beside mqm's locked packages (it
pins python-dateutil<3), so give it a venv of its own::

    python3 -m venv /tmp/nml
    /tmp/nml/bin/pip install -q --require-hashes --no-deps -r requirements-test.lock
    /tmp/nml/bin/pip install -q nannyml==0.13.1   # moves python-dateutil to 2.9
    /tmp/nml/bin/pip install -q --no-deps -e .
    NML_DISABLE_USAGE_LOGGING=1 /tmp/nml/bin/python bench/estimate_vs_nannyml.py

Without NannyML it compares with the port of NannyML's code the tests use
(tests/checks/cbpe_oracle.py) and says so. With it, it also checks that port.

Per data set (scikit-learn's breast cancer, digits and wine; statsmodels' fair and
randhie) and model (naive Bayes, logistic regression, random forest, gradient boosting):
train on 40 % of the rows, take the next 30 % as the reference, and from the last 30 % two
windows, each one chunk: all of them, and those above the median of one feature (covariate
shift). For each it prints which classes each side calibrates, both estimated accuracies,
the largest absolute difference over the five metrics, their sampling errors and the
accuracy band, the realized accuracy, and what mqm estimated before it decided calibration
(isotonic on every class). The table is the first split of the rows; ``--seeds`` more
splits feed the last table, how far each calibration rule's estimate lands from the
realized accuracy on these held-out windows (NannyML's, always, never). Progress goes to
stderr. About 4 minutes on 2 CPUs with NannyML (5 splits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML posts usage otherwise

from monitor.checks.estimated import AccuracyEstimator, check_estimated  # noqa: E402
from monitor.config import PerformanceConfig  # noqa: E402
from monitor.schema import FeatureSpec, ModelSchema, PredictionSpec  # noqa: E402
from tests.checks import cbpe_oracle  # noqa: E402

METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Name -> features, labels, the column whose upper half is the shifted window."""
    import statsmodels.api as sm
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    fair = sm.datasets.fair.load_pandas().data
    randhie = sm.datasets.randhie.load_pandas().data
    out = {
        "breast_cancer": (*load_breast_cancer(return_X_y=True), 0),  # mean radius
        "fair": (fair.drop(columns="affairs").to_numpy(float),
                 (fair["affairs"] > 0).to_numpy(int), 1),  # age
        "randhie": (randhie.drop(columns="mdvis").to_numpy(float),
                    (randhie["mdvis"] > 0).to_numpy(int), 6),  # disea
        "digits": (*load_digits(return_X_y=True), 20),  # one pixel
        "wine": (*load_wine(return_X_y=True), 0),  # alcohol
    }
    return out


def models() -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "naive_bayes": GaussianNB,
        "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "forest": lambda: RandomForestClassifier(random_state=0, n_jobs=1),
        "boosting": lambda: GradientBoostingClassifier(random_state=0),
    }


def scored(model: Any, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    proba = model.predict_proba(x)
    frame = pd.DataFrame({f"p_{c}": proba[:, i] for i, c in enumerate(model.classes_)})
    frame["pred"] = np.asarray(model.classes_)[proba.argmax(axis=1)]
    frame["y"] = y
    return frame


def nannyml_cbpe(reference: pd.DataFrame, window: pd.DataFrame, classes: list[Any]
                 ) -> dict[str, Any]:
    """NannyML's own CBPE, the window as one chunk, in the oracle's result shape."""
    import nannyml as nml

    binary = len(classes) == 2
    proba: Any = f"p_{classes[1]}" if binary else {c: f"p_{c}" for c in classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chunk-count and pandas notices
        est = nml.CBPE(y_pred_proba=proba, y_pred="pred", y_true="y", metrics=list(METRICS),
                       problem_type="classification_binary" if binary
                       else "classification_multiclass", chunk_number=1)
        est.fit(reference)
        res = est.estimate(window).filter(period="analysis").to_df()
    calibrated = ({classes[1]: bool(est.needs_calibration)} if binary else
                  {c: type(est._calibrators[c]).__name__ == "IsotonicCalibrator"
                   for c in classes})
    keys = {"value": "value", "sampling_error": "sampling_error",
            "lower": "lower_confidence_boundary", "upper": "upper_confidence_boundary"}
    return {"calibrated": calibrated,
            "metrics": {m: {k: float(res[(m, v)].iloc[0]) for k, v in keys.items()}
                        for m in METRICS}}


def max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(abs(a["metrics"][m][k] - b["metrics"][m][k])
               for m in METRICS for k in ("value", "sampling_error", "lower", "upper"))


def mqm(reference: pd.DataFrame, window: pd.DataFrame, classes: list[Any]
        ) -> tuple[dict[str, Any], float, float]:
    """mqm's result in the oracle's shape, and its accuracy estimate had it calibrated every
    class (as before this change), and had it calibrated none."""
    from sklearn.isotonic import IsotonicRegression

    schema = ModelSchema(model="m", features=[FeatureSpec(name="x", type="float")],
                         prediction=PredictionSpec(type="int", classes=classes))

    def proba(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({str(c): frame[f"p_{c}"] for c in classes})

    est = AccuracyEstimator.fit(proba(reference), reference["y"], reference["pred"], schema)
    res = check_estimated(est, proba(window), window["pred"], realized_accuracy=None,
                          config=PerformanceConfig())
    out: dict[str, Any] = {"calibrated": {c: str(c) in est.calibrated_classes for c in
                                          (classes[1:] if len(classes) == 2 else classes)},
                           "metrics": {}}
    for m in METRICS:
        value, error = res.metrics[m], res.sampling_errors[m]
        assert value is not None and error is not None
        out["metrics"][m] = {"value": value, "sampling_error": error,
                             "lower": max(0.0, value - 3 * error),
                             "upper": min(1.0, value + 3 * error)}
    assert out["metrics"]["accuracy"]["lower"] == res.lower_bound
    # Before this change mqm fitted isotonic regression on every scored class.
    scored_cols = classes[1:] if len(classes) == 2 else classes
    always = tuple(IsotonicRegression(out_of_bounds="clip", increasing=True).fit(
        reference[f"p_{c}"], (reference["y"] == c).astype(int)) for c in scored_cols)
    before = replace(est, calibrators=always).estimate(proba(window), window["pred"])
    raw = replace(est, calibrators=(None,) * len(always)).estimate(proba(window),
                                                                   window["pred"])
    assert before is not None and raw is not None
    return out, before, raw


def short(flags: dict[Any, bool]) -> str:
    on = [str(c) for c, f in flags.items() if f]
    if len(flags) == 1:
        return "yes" if on else "no"
    return f"{len(on)}/{len(flags)}" + (f" ({','.join(on)})" if 0 < len(on) < len(flags) else "")


def windows(seed: int, only: str | None, have_nannyml: bool) -> list[dict[str, Any]]:
    """Every data set x model x window for one split of the rows (``seed``)."""
    from sklearn.model_selection import train_test_split

    rows = []
    for name, (x, y, shift_col) in datasets().items():
        if only and name != only:
            continue
        x_train, x_rest, y_train, y_rest = train_test_split(
            x, y, test_size=0.6, random_state=seed, stratify=y)
        x_ref, x_pool, y_ref, y_pool = train_test_split(
            x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
        for model_name, make in models().items():
            model = make().fit(x_train, y_train)
            classes = list(model.classes_)
            reference = scored(model, x_ref, y_ref)
            shifted = x_pool[:, shift_col] > np.median(x_pool[:, shift_col])
            for label, keep in (("as drawn", np.ones(len(y_pool), bool)),
                                ("shifted", shifted)):
                window = scored(model, x_pool[keep], y_pool[keep])
                port = cbpe_oracle.cbpe(reference, window, {c: f"p_{c}" for c in classes})
                truth = nannyml_cbpe(reference, window, classes) if have_nannyml else port
                ours, before, raw = mqm(reference, window, classes)
                acc = truth["metrics"]["accuracy"]
                rows.append({
                    "data": name, "classes": len(classes), "model": model_name,
                    "window": label, "rows": len(window),
                    "nannyml_calibrates": short(truth["calibrated"]),
                    "mqm_calibrates": short(ours["calibrated"]),
                    "same_decision": {str(k): v for k, v in truth["calibrated"].items()}
                    == {str(k): v for k, v in ours["calibrated"].items()},
                    "nannyml": acc["value"], "mqm": ours["metrics"]["accuracy"]["value"],
                    "max_abs_diff": max_diff(ours, truth),
                    "port_diff": max_diff(port, truth),
                    "sampling_error": acc["sampling_error"],
                    "band": f"{acc['lower']:.3f}-{acc['upper']:.3f}",
                    "realized": float(np.mean(window["pred"] == window["y"])),
                    "before": before, "raw": raw,
                    "before_off": abs(before - acc["value"]),
                    "before_off_se": abs(before - acc["value"]) / acc["sampling_error"]
                    if acc["sampling_error"] else float("nan"),
                })
                r = rows[-1]
                print(f"seed {seed} {name:13s} {model_name:11s} {label:8s} "
                      f"rows={r['rows']:5d} calibrates nannyml={r['nannyml_calibrates']:>12s} "
                      f"mqm={r['mqm_calibrates']:>12s} diff={r['max_abs_diff']:.1e}",
                      file=sys.stderr, flush=True)
    return rows


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="a data set name to run alone")
    parser.add_argument("--seeds", type=int, default=5,
                        help="splits of the rows for the accuracy evidence (the table: the "
                        "first)")
    args = parser.parse_args()
    try:
        import nannyml  # noqa: F401
        have_nannyml = True
    except ImportError:
        have_nannyml = False
        print("NannyML is not installed here: comparing with tests/checks/cbpe_oracle.py "
              "(see the docstring for a venv with NannyML)\n")
    started = time.perf_counter()
    frame = pd.DataFrame([r for seed in range(args.seeds)
                          for r in windows(seed, args.only, have_nannyml)])
    first = frame.iloc[:len(frame) // args.seeds]
    print(f"{len(frame)} windows ({args.seeds} splits) in "
          f"{time.perf_counter() - started:.0f} s; oracle: "
          f"{'NannyML 0.13.1' if have_nannyml else 'the port (NannyML not installed)'}\n")
    shown = first.drop(columns=["port_diff", "raw"])
    fmt = {c: "{:.4f}".format for c in ("nannyml", "mqm", "sampling_error", "realized",
                                        "before", "before_off")}
    fmt |= {"max_abs_diff": "{:.1e}".format, "before_off_se": "{:.2f}".format}
    table = shown.assign(**{c: shown[c].map(f) for c, f in fmt.items()},
                         same_decision=shown["same_decision"].map({True: "yes", False: "NO"}))
    print(markdown(table))
    print(f"\nover all {len(frame)} windows: largest difference mqm - "
          f"{'NannyML' if have_nannyml else 'port'} (five metrics, their sampling errors, "
          f"the accuracy band): {frame['max_abs_diff'].max():.1e}; calibration decisions "
          f"equal in {int(frame['same_decision'].sum())}/{len(frame)}")
    if have_nannyml:
        print(f"largest difference port - NannyML: {frame['port_diff'].max():.1e}")
    declined = frame[(frame["nannyml_calibrates"] == "no")
                     | frame["nannyml_calibrates"].str.startswith("0/")]
    print(f"windows where NannyML calibrates no class: {len(declined)}; there the "
          f"always-calibrate estimate (mqm before) was off NannyML's by up to "
          f"{declined['before_off'].max():.4f} ({declined['before_off_se'].max():.2f} "
          "sampling errors)")
    print("\n|estimate - realized| on held-out windows, by calibration rule:\n")
    rules = {"NannyML's (mqm now)": "nannyml", "always (mqm before)": "before",
             "never": "raw"}
    summary = []
    for part, rows in (("binary", frame[frame["classes"] == 2]),
                       ("multiclass", frame[frame["classes"] > 2]), ("all", frame)):
        errors = {rule: (rows[col] - rows["realized"]).abs() for rule, col in rules.items()}
        best = pd.DataFrame(errors).idxmin(axis=1).value_counts()
        for rule, err in errors.items():
            summary.append({"windows": f"{part} ({len(rows)})", "rule": rule,
                            "mean": f"{err.mean():.4f}", "median": f"{err.median():.4f}",
                            "max": f"{err.max():.4f}", "closest in": int(best.get(rule, 0))})
    print(markdown(pd.DataFrame(summary)))


if __name__ == "__main__":
    main()
