"""Model contracts: loading with clear errors, value typing, drafting from data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from monitor.errors import SchemaError
from monitor.schema import (
    infer_schema,
    int_label_codes,
    is_of_type,
    label_of,
    load_schema,
    parse_text,
    schema_to_yaml,
)


def test_sample_contract_loads(schema_path: Path) -> None:
    schema = load_schema(schema_path)
    assert schema.model == "loan_default"
    assert schema.feature("home_ownership").allowed == ["RENT", "MORTGAGE", "OWN"]
    assert schema.prediction.probability_columns == {"0": "proba_0", "1": "proba_1"}
    assert schema.target is not None and schema.target.column == "defaulted"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model: m\nfeatures: []\nprediction: {type: int}\n", "features: List should have"),
        ("model: m\nfeatures: [{name: a, type: decimal}]\nprediction: {type: int}\n",
         r"features\.0\.type"),
        ("model: m\nfeatures: [{name: a, type: string, min: 1}]\nprediction: {type: int}\n",
         "min/max apply to int and float"),
        ("model: m\nfeatures: [{name: a, type: int}, {name: a, type: float}]\n"
         "prediction: {type: int}\n", "not unique: a"),
        ("model: m\nfeatures: [{name: a, type: int, colour: red}]\nprediction: {type: int}\n",
         r"features\.0\.colour: unknown key"),
    ],
)
def test_bad_contracts_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError, match=match) as err:
        load_schema(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("value", "ftype", "ok"),
    [
        (3, "int", True), (3.0, "int", True), (3.7, "int", False), (True, "int", False),
        ("3", "int", False), (3, "float", True), (2.5, "float", True), ("N/A", "float", False),
        (True, "bool", True), ("yes", "bool", False), (1, "bool", False),
        ("a", "string", True), (1, "string", False), ("RENT", "category", True),
        (2, "category", True), (1.5, "category", False),
        ("2026-10-01T00:00:00+00:00", "datetime", True), ("yesterday", "datetime", False),
    ],
)
def test_value_typing(value: object, ftype: str, ok: bool) -> None:
    assert is_of_type(value, ftype) is ok


def test_text_values_parse_only_when_they_fit() -> None:
    assert parse_text("12", "int") == 12
    assert parse_text("3.5", "int") == 3.5  # kept as a float: the check flags it
    assert parse_text("12,500", "float") == "12,500"
    assert parse_text("TRUE", "bool") is True
    assert parse_text("maybe", "bool") == "maybe"


def test_infer_drafts_a_loadable_contract(tmp_path: Path) -> None:
    ref = pd.read_parquet(Path(__file__).resolve().parents[1] / "sample_data/reference.parquet")
    draft, ranges = infer_schema(ref, model="loan_default", target="defaulted")
    types = {f.name: f.type for f in draft.features}
    assert types["age"] == "int" and types["annual_income"] == "float"
    assert types["has_cosigner"] == "bool" and types["home_ownership"] == "category"
    assert "request_id" not in types and "defaulted" not in types and "proba_1" not in types
    assert draft.feature("employment_years").nullable is True
    assert draft.feature("age").nullable is False
    assert ranges["age"] == (int(ref["age"].min()), int(ref["age"].max()))
    assert draft.prediction.probability_columns == {"0": "proba_0", "1": "proba_1"}
    path = tmp_path / "draft.yaml"
    path.write_text(schema_to_yaml(draft, ranges), encoding="utf-8")
    assert load_schema(path) == draft
    assert "# observed in the reference:" in path.read_text()
    assert yaml.safe_load(path.read_text())["model"] == "loan_default"


def _regressor_reference(prediction: str = "y_pred") -> pd.DataFrame:
    """A scikit-learn regressor's reference set: features, target and its prediction."""
    import numpy as np

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"MedInc": rng.normal(3, 1, 300), "HouseAge": rng.integers(1, 50, 300),
                          "MedHouseVal": rng.normal(2, 0.5, 300)})
    frame[prediction] = frame["MedHouseVal"] + rng.normal(0, 0.1, 300)
    return frame


def test_infer_guesses_an_obvious_prediction_column() -> None:
    draft, _ = infer_schema(_regressor_reference(), model="houses", target="MedHouseVal")
    assert draft.prediction.column == "y_pred" and draft.task == "regression"
    assert draft.feature_names == ["MedInc", "HouseAge"]
    named, _ = infer_schema(_regressor_reference("prediction"), model="houses")
    assert named.prediction.column == "prediction"


def test_infer_lists_the_candidates_when_it_cannot_guess() -> None:
    two = _regressor_reference().assign(predicted_old=1.0)
    with pytest.raises(SchemaError, match=r"which column holds the prediction\? candidates: "
                       r"y_pred, predicted_old; name one"):
        infer_schema(two, model="houses", target="MedHouseVal")
    none = _regressor_reference("estimate")
    with pytest.raises(SchemaError, match=r"no column looks like the prediction.*columns: "
                       r"MedInc, HouseAge, MedHouseVal, estimate"):
        infer_schema(none, model="houses", target="MedHouseVal")
    with pytest.raises(SchemaError, match=r"prediction column 'yhat' is not in the data; "
                       r"columns: MedInc"):
        infer_schema(none, model="houses", prediction="yhat")


# --- features-only contracts (task: features) ------------------------------------------


def test_a_features_only_contract_has_no_prediction(tmp_path: Path) -> None:
    path = tmp_path / "inputs.yaml"
    path.write_text("model: inputs\ntask: features\nfeatures: [{name: a, type: float}]\n",
                    encoding="utf-8")
    schema = load_schema(path)
    assert schema.features_only and schema.prediction is None and schema.target is None
    assert schema.prediction_column is None and schema.feature_names == ["a"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # A prediction (or target) on a features-only contract would never be judged.
        ("task: features\nprediction: {type: int}\n", "task: features monitors the inputs "
         "alone, so the contract has no prediction; remove it"),
        ("task: features\ntarget: {column: y, type: int}\n", "has no target; remove it"),
        # Forgetting the prediction of a classifier is no silent features-only contract.
        ("task: classification\n", "prediction is required for task: classification .*"
         "declares task: features"),
        ("", "prediction is required for task: classification"),
    ],
)
def test_features_only_is_declared_not_guessed(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"model: m\nfeatures: [{{name: a, type: int}}]\n{text}", encoding="utf-8")
    with pytest.raises(SchemaError, match=match) as err:
        load_schema(path)
    assert str(path) in str(err.value)


def test_infer_a_features_only_contract_guesses_nothing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"request_id": ["a", "b", "c"], "MedInc": [1.5, 2.5, 3.0],
                          "HouseAge": [10, 20, 30]})
    # Without a prediction column, the guess fails and says how to draft features only.
    with pytest.raises(SchemaError, match=r"--no-prediction"):
        infer_schema(frame, model="houses")
    draft, ranges = infer_schema(frame, model="houses", features_only=True)
    assert draft.task == "features" and draft.prediction is None
    assert draft.feature_names == ["MedInc", "HouseAge"] and ranges["HouseAge"] == (10, 30)
    text = schema_to_yaml(draft, ranges)
    assert "prediction" not in text and "task: features" in text
    path = tmp_path / "houses.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_schema(path) == draft
    with pytest.raises(SchemaError, match="no prediction and no target"):
        infer_schema(frame, model="houses", features_only=True, target="MedInc")


@pytest.mark.parametrize("filler", [0, 2**62, -7], ids=["zeros", "huge", "in-range"])
def test_int_label_codes_are_label_text_of_the_labelled_slots(filler: int) -> None:
    """Whatever the slots without a label hold (a filler, or a value far outside the
    labels' range), the codes name label_text's text of each labelled row, None
    elsewhere; the words are distinct and in the ints' order."""
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 40, 5000).astype(np.int64)
    has = rng.random(5000) < 0.7
    values[~has] = filler
    codes = int_label_codes(values, has)
    assert codes is not None and codes.numbers is None
    want = [label_of(int(v)) if h else None for v, h in zip(values, has, strict=True)]
    assert codes.texts().tolist() == want
    assert codes.words.tolist() == [str(v) for v in sorted(set(values[has].tolist()))]
    assert codes.take(has).texts().tolist() == [w for w in want if w is not None]


def test_int_label_codes_give_up_on_a_wide_range_and_code_no_label_as_none() -> None:
    wide = np.array([0, 2**20, 5], dtype=np.int64)
    assert int_label_codes(wide, np.ones(3, dtype=bool)) is None
    assert int_label_codes(wide, np.array([True, False, True])) is not None
    none = int_label_codes(wide, np.zeros(3, dtype=bool))
    assert none is not None and none.texts().tolist() == [None, None, None]
