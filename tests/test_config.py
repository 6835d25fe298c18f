"""Config: typed, validated, errors name the file and key path; env overrides win."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.errors import ConfigError, UnknownModelError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
models:
  m1:
    schema: schemas/m1.yaml
    reference: data/ref.parquet
"""


def test_shipped_config_loads_and_resolves_paths_relative_to_it() -> None:
    cfg = load_config(ROOT / "monitor.yaml")
    model = cfg.model("loan_default")
    assert model.schema_path == ROOT / "schemas" / "loan_default.yaml"
    assert model.schema_path.exists() and model.reference.exists()
    assert cfg.database_url == f"sqlite:///{ROOT / 'mqm.db'}"


def test_defaults_and_durations(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + "    window: 6h\n"))
    m1 = cfg.model("m1")
    assert m1.window == timedelta(hours=6)
    assert m1.min_rows == 100
    assert m1.source.kind == "builtin"
    assert m1.schema_path == tmp_path / "schemas" / "m1.yaml"


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    windw: 1d\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "models.m1.windw: unknown key" in str(err.value)


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    min_rows: many\n")
    with pytest.raises(ConfigError, match=r"models\.m1\.min_rows: .*integer.*'many'"):
        load_config(path)


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m1:\n    schema: s.yaml\n")
    with pytest.raises(ConfigError, match=r"models\.m1\.reference: required key is missing"):
        load_config(path)


def test_bad_duration_and_threshold_order(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.m1\.window"):
        load_config(write(tmp_path, MINIMAL + "    window: soon\n"))
    bad = MINIMAL + ("    schema_check:\n      warn_violation_rate: 0.5\n"
                     "      critical_violation_rate: 0.1\n")
    with pytest.raises(ConfigError, match="warn_violation_rate must not exceed"):
        load_config(write(tmp_path, bad))


def test_sql_source_needs_table_or_query(tmp_path: Path) -> None:
    text = MINIMAL + "    source:\n      kind: sql\n"
    with pytest.raises(ConfigError, match="exactly one of table or query"):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m1: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("MQM_CONFIG", str(path))
    monkeypatch.setenv("MQM_DATABASE_URL", "postgresql+psycopg://u@h/db")
    cfg = load_config()
    assert cfg.database_url == "postgresql+psycopg://u@h/db"
    assert "m1" in cfg.models


def test_relative_sqlite_url_is_relative_to_the_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "database_url: sqlite:///state/x.db\n" + MINIMAL))
    assert cfg.database_url == f"sqlite:///{tmp_path.resolve() / 'state' / 'x.db'}"


def test_unknown_model(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(UnknownModelError, match="unknown model 'm2'; the config declares: m1"):
        cfg.model("m2")


def test_readme_config_reference_matches_the_declarations() -> None:
    from monitor.cli.config_docs import config_reference

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_reference() in readme, "README config reference is stale: " \
        "paste the output of `mqm config reference`"


def test_fallback_settings(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "fallback_dir: state/flags\n" + MINIMAL + "    window: 6h\n"))
    m1 = cfg.model("m1")
    assert (m1.fallback.bad_statuses, m1.fallback.trip_after, m1.fallback.recover_after) == (
        ("critical",), 2, 3)
    assert m1.fallback.default_prediction is None
    assert m1.stale_after == timedelta(hours=18)  # unset: three windows
    assert cfg.fallback_dir == tmp_path / "state" / "flags"
    assert load_config(write(tmp_path, MINIMAL)).fallback_dir is None
    text = MINIMAL + ("    fallback:\n      bad_statuses: [warn, critical]\n"
                      "      stale_after: 2d\n      default_prediction: {label: no, p: 0.1}\n")
    m1 = load_config(write(tmp_path, text)).model("m1")
    assert m1.fallback.bad_statuses == ("warn", "critical")
    assert m1.stale_after == timedelta(days=2)
    assert m1.fallback.default_prediction == {"label": False, "p": 0.1}  # YAML's 'no'


@pytest.mark.parametrize("section, message", [
    ("      bad_statuses: [ok]\n", r"models\.m1\.fallback\.bad_statuses\.0: Input should be "
                                   r"'warn' or 'critical'"),
    ("      bad_statuses: []\n", r"models\.m1\.fallback\.bad_statuses: .*at least 1 item"),
    ("      trip_after: 0\n", r"models\.m1\.fallback\.trip_after: .*greater than or equal to 1"),
    ("      stale_after: -1h\n", r"models\.m1\.fallback\.stale_after"),
    ("      default_prediction: 2026-01-01\n",
     r"models\.m1\.fallback\.default_prediction: .*must be a JSON value"),
])
def test_bad_fallback_settings_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL + "    fallback:\n" + section))


def test_fallback_dir_needs_model_names_that_are_file_names(tmp_path: Path) -> None:
    text = "fallback_dir: flags\nmodels:\n  ../up:\n    schema: s.yaml\n    reference: r.csv\n"
    with pytest.raises(ConfigError, match=r"fallback_dir: .*'\.\./up' cannot name a file"):
        load_config(write(tmp_path, text))


# --- settings that used to pass and fail later (issue 13, item 7) ------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("''", r"models: model name '' must be 1 to 200 characters"),
    ("a" * 201, r"models: model name 'a{201}' must be 1 to 200 characters"),
    ('"a\\tb"', r"models: model name 'a\\tb' must not hold control characters"),
])
def test_model_names_fit_the_store(tmp_path: Path, name: str, message: str) -> None:
    text = f"models:\n  {name}:\n    schema: s.yaml\n    reference: r.csv\n"
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, MINIMAL.replace("m1", "m" * 200))).models


@pytest.mark.parametrize("window", ["100000000000d", "1e20", "3651d", "99999999999999999999"])
def test_durations_too_long_are_refused_not_overflowing(tmp_path: Path, window: str) -> None:
    with pytest.raises(ConfigError, match=r"models\.m1\.window: "):
        load_config(write(tmp_path, MINIMAL + f"    window: {window}\n"))
    assert load_config(write(tmp_path, MINIMAL + "    window: 3650d\n")).model("m1").window \
        == timedelta(days=3650)


def test_a_binary_file_is_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_bytes(b"models:\n  m1: \xc2\x00\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"monitor\.yaml: not UTF-8 text \(byte 14\)"):
        load_config(path)


def test_retention_never_shorter_than_the_label_delay_and_a_window(tmp_path: Path) -> None:
    # Unset: 90 days, or max_label_delay + window when longer (never an error).
    assert load_config(write(tmp_path, MINIMAL)).model("m1").retention_period == \
        timedelta(days=90)
    long = MINIMAL + "    window: 30d\n    performance: {max_label_delay: 70d}\n"
    assert load_config(write(tmp_path, long)).model("m1").retention_period == \
        timedelta(days=100)
    # Set: as set, and refused when shorter, naming both figures.
    assert load_config(write(tmp_path, MINIMAL + "    retention: 8d\n")).model(
        "m1").retention_period == timedelta(days=8)
    with pytest.raises(ConfigError, match=r"models\.m1: retention \(7 days\) must be at least "
                       r"performance\.max_label_delay \+ window \(8 days\)"):
        load_config(write(tmp_path, MINIMAL + "    retention: 7d\n"))
    assert load_config(write(tmp_path, MINIMAL + "    retention: null\n")).model(
        "m1").retention_period is None
    every = MINIMAL + "    schedule: {retention_every: 10m}\n"
    assert load_config(write(tmp_path, every)).model("m1").schedule.retention_every == \
        timedelta(minutes=10)
