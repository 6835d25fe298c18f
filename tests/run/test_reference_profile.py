"""The reference profile: built once per reference content, stored, and read back by every
later check instead of the reference file, on both backends."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitor.ingest import ingest_labels, ingest_logs
from monitor.run import reference
from monitor.run.check import run_check
from monitor.run.model import reference_version
from monitor.run.reference import (
    decode_profile,
    encode_profile,
    load_reference_data,
    profile_key,
)
from monitor.store.profiles import load_profile, save_profile
from monitor.store.tables import reference_profiles
from tests.conftest import ROOT

DATA = ROOT / "sample_data"
DRIFTED = datetime(2026, 10, 13, tzinfo=UTC)    # end of the window of 10-12
LATER = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_memory_cache() -> Iterator[None]:
    """Each test starts with this process's profile cache empty."""
    reference._CACHE.clear()
    yield
    reference._CACHE.clear()


@pytest.fixture
def day_store(engine: sa.Engine, schema, tmp_path: Path) -> sa.Engine:  # type: ignore[no-untyped-def]
    """The store (each backend) with the sample's logs and labels of the drifted day."""
    logs = pd.read_parquet(DATA / "production_logs.parquet")
    day = logs[(logs.timestamp >= DRIFTED - timedelta(days=1)) & (logs.timestamp < DRIFTED)]
    day.to_parquet(tmp_path / "day.parquet")
    labels = pd.read_parquet(DATA / "labels.parquet")
    labels[labels.request_id.isin(day.request_id)].to_parquet(tmp_path / "labels.parquet")
    ingest_logs(engine, "loan_default", schema, tmp_path / "day.parquet")
    ingest_labels(engine, "loan_default", schema, tmp_path / "labels.parquet")
    return engine


def _profiles(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(
            reference_profiles.c.key, reference_profiles.c.reference_version))]


def _same_parts(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for name, values in a[1].items():
        assert values.dtype == b[1][name].dtype, name
        assert np.array_equal(values, b[1][name]), name


@pytest.mark.parametrize("calibration", ["nannyml", "always"])
def test_a_profile_reads_back_bit_for_bit(make_config, schema, calibration: str) -> None:
    _, cfg = make_config(performance={"estimated_calibration": calibration})
    model_cfg = cfg.models["loan_default"]
    built = load_reference_data(model_cfg, schema, "v1")
    back = decode_profile(encode_profile(built))
    assert (back.version, back.rows, back.metrics, back.estimator_error) == (
        built.version, built.rows, built.metrics, built.estimator_error)
    _same_parts(back.drift_profile.to_parts(), built.drift_profile.to_parts())
    assert built.estimator is not None and back.estimator is not None
    _same_parts(back.estimator.to_parts(), built.estimator.to_parts())
    assert back.estimator.calibration == built.estimator.calibration
    assert back.estimator.sampling == built.estimator.sampling
    assert len(back.estimator.calibrated_classes) == (calibration == "always")
    # Read back, the profile is as read-only as built: no window may sort it in place.
    num = back.drift_profile._stats["annual_income"]
    assert not num.values.flags.writeable  # type: ignore[union-attr]
    # And it estimates a window exactly as the one built.
    ref = pd.read_parquet(DATA / "reference.parquet").sample(2000, random_state=1)
    probs = pd.DataFrame({"0": ref["proba_0"] ** 1.5, "1": ref["proba_1"]})
    assert back.estimator.estimate_metrics(probs, ref["prediction"]) == \
        built.estimator.estimate_metrics(probs, ref["prediction"])


def test_bytes_it_did_not_write_are_refused() -> None:
    for blob in (b"", b"not a profile", encode_profile.__doc__.encode()):  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="not a reference profile"):
            decode_profile(blob)


def test_a_check_stores_the_profile_and_the_next_one_reads_it(
        day_store: sa.Engine, make_config, schema, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cfg = make_config(str(day_store.url.render_as_string(hide_password=False)),
                         min_rows=500)
    first = run_check(day_store, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    version = reference_version(DATA / "reference.parquet")
    key = profile_key(cfg.models["loan_default"], schema, version)  # type: ignore[arg-type]
    assert _profiles(day_store) == [(key, version)]
    # A fresh process: nothing in memory, and the file may not be read nor the estimator
    # fitted again. What the check gets from the store gives the same run.
    reference._CACHE.clear()

    def no_build(*_: object) -> None:
        raise AssertionError("the reference set was read again")

    monkeypatch.setattr(reference, "_build", no_build)
    second = run_check(day_store, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert first is not None and second is not None
    assert second.as_dict() == first.as_dict()
    assert first.status == "critical"


def test_a_changed_reference_file_gets_its_own_profile(
        day_store: sa.Engine, make_config, schema, tmp_path: Path) -> None:
    path = tmp_path / "reference.parquet"
    shutil.copyfile(DATA / "reference.parquet", path)
    _, cfg = make_config(str(day_store.url.render_as_string(hide_password=False)),
                         min_rows=500, reference=str(path))
    before = run_check(day_store, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    # New content under the same name: incomes doubled, half the predictions flipped.
    frame = pd.read_parquet(path)
    frame["annual_income"] *= 2
    frame.loc[frame.index[::2], "prediction"] = 1 - frame["prediction"][::2]
    frame.to_parquet(path)
    after = run_check(day_store, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert before is not None and after is not None
    assert after.reference_version != before.reference_version
    assert {v for _, v in _profiles(day_store)} == {before.reference_version,
                                                    after.reference_version}
    # The new profile's figures are the new file's (an independent count).
    labels, preds = frame["defaulted"].astype(str), frame["prediction"].astype(str)
    accuracy = float((labels == preds).mean())
    assert after.performance.reference_metrics["accuracy"] == pytest.approx(accuracy)
    assert before.performance.reference_metrics["accuracy"] != pytest.approx(accuracy)
    assert after.drift.feature("annual_income").score != \
        before.drift.feature("annual_income").score


def test_an_unreadable_stored_profile_is_built_again_and_replaced(
        day_store: sa.Engine, make_config, schema, caplog: pytest.LogCaptureFixture) -> None:
    _, cfg = make_config(str(day_store.url.render_as_string(hide_password=False)),
                         min_rows=500)
    version = reference_version(DATA / "reference.parquet")
    assert version is not None
    key = profile_key(cfg.models["loan_default"], schema, version)
    save_profile(day_store, key, reference_version=version, data=b"torn")
    with caplog.at_level(logging.WARNING, logger="mqm.reference"):
        run = run_check(day_store, cfg, "loan_default", at=DRIFTED, now=LATER, persist=False)
    assert run is not None and run.status == "critical"
    assert "cannot be read" in caplog.text
    stored = load_profile(day_store, key)
    assert stored is not None and stored != b"torn"
    assert decode_profile(stored).rows == 10_000


def test_a_profile_stored_twice_keeps_the_first(engine: sa.Engine) -> None:
    save_profile(engine, "k" * 64, reference_version="v", data=b"first")
    save_profile(engine, "k" * 64, reference_version="v", data=b"second")
    assert load_profile(engine, "k" * 64) == b"first"
    save_profile(engine, "k" * 64, reference_version="v", data=b"third", replace=True)
    assert load_profile(engine, "k" * 64) == b"third"
    assert load_profile(engine, "x" * 64) is None


CHILD = textwrap.dedent("""
    import sys
    from monitor.cli.main import main
    try:
        main(sys.argv[1:], prog_name="mqm")
    except SystemExit:
        pass
    heavy = sorted(m for m in ("alembic", "sklearn", "scipy.optimize", "scipy.stats",
                               "scipy.special") if m in sys.modules)
    print("HEAVY", ",".join(heavy))
""")


def _check_in_child(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "--config", str(config), "check", "--model",
         "loan_default", "--at", DRIFTED.isoformat(), "--no-save"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "HEAVY" in done.stdout, done.stderr
    assert "critical" in done.stdout, done.stdout + done.stderr
    return done.stdout.rsplit("HEAVY", 1)[1].strip()


def test_a_check_with_a_stored_profile_imports_no_scikit_learn_scipy_or_alembic(
        day_store: sa.Engine, make_config) -> None:
    path, _ = make_config(str(day_store.url.render_as_string(hide_password=False)),
                          min_rows=500, performance={"estimated_calibration": "always"})
    # The first check fits the calibration and stores the profile, with the
    # pool-adjacent-violators done in mqm (scipy.optimize, which brings scipy.special,
    # took 0.7-1 s to import), and no scikit-learn.
    assert _check_in_child(path) == ""
    # The next ones apply it from the store, with numpy alone; the drifted window still
    # counts its drifted columns against chance (without scipy), and the store, at this
    # mqm's revision, is taken as it is (without alembic).
    assert _check_in_child(path) == ""
