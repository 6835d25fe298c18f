"""``mqm config check`` finds what would fail later: in the config, in each contract, in
each schedule and in each reference set's columns (issue 13, item 7)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from monitor.cli.main import main
from tests.conftest import ROOT

REFERENCE = ROOT / "sample_data" / "reference.parquet"


@pytest.fixture
def config_check(tmp_path: Path, schema_path: Path):  # type: ignore[no-untyped-def]
    """Factory: ``mqm config check`` on a config of models (name -> settings over the
    sample model's)."""

    def run(**models: dict[str, object]):  # type: ignore[no-untyped-def]
        data = {"database_url": f"sqlite:///{tmp_path / 'mqm.db'}",
                "models": {name: {"schema": str(schema_path), "reference": str(REFERENCE),
                                  **settings} for name, settings in models.items()}}
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return CliRunner().invoke(main, ["--config", str(path), "config", "check"])

    return run


def reference_without(tmp_path: Path, *columns: str, suffix: str = ".parquet") -> str:
    frame = pd.read_parquet(REFERENCE).drop(columns=list(columns))
    path = tmp_path / f"ref_without_{'_'.join(columns)}{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, encoding="utf-8-sig")  # with a BOM, as Excel writes
    return str(path)


def test_a_good_config_is_ok(config_check, tmp_path: Path) -> None:
    csv = tmp_path / "ref.csv"
    pd.read_parquet(REFERENCE).head(50).to_csv(csv, index=False, encoding="utf-8-sig")
    result = config_check(a={}, b={"reference": str(csv), "schedule": {"cron": "5 * * * 1-5"}})
    assert result.exit_code == 0, result.output
    assert result.output == "ok: 2 model(s): a, b\n"


@pytest.mark.parametrize(("settings", "message"), [
    ({"schedule": {"cron": "99 * * * *"}},
     "error: model 'a': schedule.cron '99 * * * *': "),
    ({"schedule": {"cron": "0 0 * * 9"}}, "error: model 'a': schedule.cron '0 0 * * 9': "),
    ({"reference": str(ROOT / "sample_data")},
     f"error: model 'a': {ROOT / 'sample_data'}: is a directory; the reference set is one "
     "CSV or Parquet file"),
    ({"reference": str(ROOT / "README.md")},
     f"error: model 'a': {ROOT / 'README.md'}: unknown file type; use .csv or .parquet"),
])
def test_settings_that_fail_later(config_check, settings: dict[str, object],
                                  message: str) -> None:
    result = config_check(a=settings)
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output and "ok:" not in result.output


def test_the_reference_must_hold_the_contracts_columns(config_check, tmp_path: Path) -> None:
    result = config_check(
        a={"reference": reference_without(tmp_path, "prediction")},
        b={"reference": reference_without(tmp_path, "proba_1", "age", suffix=".csv")})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("error: model 'a': ") and lines[0].endswith(
        "ref_without_prediction.parquet lacks the prediction column prediction")
    assert lines[1].endswith("ref_without_proba_1_age.csv lacks feature column(s) age")
    assert lines[2].endswith("ref_without_proba_1_age.csv lacks probability column(s) proba_1")
    assert len(lines) == 3


def test_a_reference_without_labels_is_a_warning(config_check, tmp_path: Path) -> None:
    result = config_check(a={"reference": reference_without(tmp_path, "defaulted")})
    assert result.exit_code == 0, result.output
    assert "warning: model 'a': " in result.output
    assert "lacks the target column defaulted: accuracy is measured but not compared " \
        "with the reference" in result.output
    assert result.output.endswith("ok: 1 model(s): a\n")


def test_unreadable_files_are_one_line_each(config_check, tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    result = config_check(a={"schema": str(binary)}, b={"reference": str(broken)})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"error: model 'a': {binary}: not UTF-8 text (byte 128); a YAML file " \
        "is expected"
    assert lines[1].startswith(f"error: model 'b': {broken}: cannot read the reference set: ")
    assert len(lines) == 2


@pytest.mark.parametrize(("models", "message"), [
    ({"a": {"window": "100000000000d"}}, "models.a.window: is too long a duration"),
    ({"x" * 201: {}}, "models: model name 'xxxx"),
    ({"": {}}, "models: model name '' must be 1 to 200 characters"),
])
def test_config_values_that_overflowed_later(config_check, models: dict[str, dict[str, object]],
                                             message: str) -> None:
    result = config_check(**models)
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1 and message in result.output


def test_a_directory_as_reference_is_an_error_section_not_a_traceback(
        sample_store: Path, tmp_path: Path, make_config) -> None:
    import shutil

    db = tmp_path / "copy.db"
    shutil.copyfile(sample_store, db)
    path, _ = make_config(f"sqlite:///{db}", reference=str(tmp_path))
    result = CliRunner().invoke(main, ["--config", str(path), "check", "-m", "loan_default",
                                       "--at", "2026-10-03", "--no-save"])
    assert result.exit_code == 0, result.output
    assert "status ERROR" in result.output
    assert f"drift        error             could not run: {tmp_path}: is a directory" \
        in result.output


def test_a_features_only_model_is_accepted_and_prediction_settings_warn(tmp_path: Path
                                                                        ) -> None:
    """Issue 13, item 11: a features-only contract needs no prediction column in the
    reference; settings that need predictions have no effect, and say so as warnings."""
    from tests.conftest import FEATURES_MODEL, features_only_model

    def check(**settings: object):  # type: ignore[no-untyped-def]
        path = features_only_model(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}", **settings)
        return CliRunner().invoke(main, ["--config", str(path), "config", "check"])

    result = check()
    assert result.exit_code == 0, result.output
    assert result.output == f"ok: 1 model(s): {FEATURES_MODEL}\n"
    result = check(performance={"allowed_drop": {"accuracy": 0.02}},
                   drift={"prediction_in_share": False},
                   source={"columns": {"prediction": "score"}})
    assert result.exit_code == 0, result.output  # warnings only
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: model {FEATURES_MODEL!r}: performance (allowed_drop)"
                              "; drift.prediction_in_share; source.columns.prediction: no "
                              "effect, its contract ")
    assert "declares no prediction (task: features)" in warning
    # A feature the reference lacks is still an error.
    path = features_only_model(tmp_path, f"sqlite:///{tmp_path / 'mqm.db'}")
    reference = tmp_path / f"{FEATURES_MODEL}_reference.parquet"
    pd.read_parquet(reference).drop(columns=["age"]).to_parquet(reference)
    result = CliRunner().invoke(main, ["--config", str(path), "config", "check"])
    assert result.exit_code == 1
    assert "lacks feature column(s) age" in result.output


@pytest.mark.parametrize(("columns", "message"), [
    (["age"], "error: model 'a': segments.columns: 'age' is a feature of type int; a "
     "segment column must be categorical (category, bool, string) or model_version"),
    (["city"], "error: model 'a': segments.columns: 'city' is not a feature of the contract"),
])
def test_segment_columns_must_be_categorical_features(config_check, columns: list[str],
                                                      message: str) -> None:
    result = config_check(a={"segments": {"columns": columns}})
    assert result.exit_code != 0
    assert message in result.output, result.output


def test_categorical_and_version_segments_are_ok(config_check) -> None:
    result = config_check(a={"segments": {"columns": ["home_ownership", "model_version",
                                                      "has_cosigner"]}})
    assert result.exit_code == 0, result.output
