"""GeepConfig: a damaged `geep` section of config.json is one GeepError naming what is wrong, never an error from
far away (an AttributeError in `geep info`, a TypeError in `predict`)."""

import pytest

from geep.errors import GeepError
from geep.modeling.config import GeepConfig

GOOD = {"num_layers": 4, "label_names": ["a", "b"], "format_version": 2}


@pytest.mark.parametrize("change, message", [
    ({"exit_layers": "x"}, "exit_layers must be a list of integers, got 'x'"),
    ({"exit_table": "oops"}, "exit_table must be null or an object with a file name"),
    ({"exit_table": {"file": "../../elsewhere", "build_threshold": 0.2}}, "exit_table must be null or an object"),
    ({"exit_table": {"file": "t.safetensors"}}, "exit_table must be null or an object"),
    ({"dev_accuracy": "x"}, "dev_accuracy must be an object"),
    ({"label_names": "ab"}, "label_names must be a list of strings"),
    ({"num_layers": "4"}, "num_layers must be a positive integer, got '4'"),
    ({"max_length": "128"}, "max_length must be an integer >= 2"),
    ({"head_width": None}, "head_width must be a positive integer"),
    ({"head_dropout": 2}, "head_dropout must be a number in [0, 1)"),
    ({"text_pair_column": 3}, "text_pair_column must be a string or null"),
    ({"recipe": ["teacher"]}, "recipe must be a string or null"),
    ({"auto_settings": ["x"]}, "auto_settings must be an object"),
    ({"default_policy": {"fp32": 3}}, "default_policy must be an object of precision -> policy name"),
])
def test_a_field_of_the_wrong_type_is_one_line(change, message):
    with pytest.raises(GeepError) as e:
        GeepConfig.from_dict({**GOOD, **change})
    assert "the geep section of config.json is damaged" in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_required_key_is_named():
    with pytest.raises(GeepError, match="it lacks label_names, num_layers"):
        GeepConfig.from_dict({"format_version": 2})


def test_a_good_section_round_trips():
    config = GeepConfig.from_dict({**GOOD, "exit_table": {"file": "exit_table.safetensors", "build_threshold": 0.2},
                                   "auto_settings": {"pooling": "mean: because"}})
    assert GeepConfig.from_dict(config.to_dict()) == config


def test_the_default_policy_is_stored_per_precision_and_older_sections_load_without_one():
    """A format-2 section written before the default policy existed loads with none; one calibrated since keeps
    one per precision; rebuilding the exit table (drop_knobs of the geep policies) forgets a geep default."""
    assert GeepConfig.from_dict(GOOD).default_policy == {}
    config = GeepConfig.from_dict({**GOOD, "default_knobs": {"fp32": {"geep-verify": {"tau": 0.3},
                                                                      "fastbert": {"threshold": 0.4}}}})
    config.store_policy("fp32", "geep-verify")
    config.store_policy("int8", "fastbert")
    again = GeepConfig.from_dict(config.to_dict())
    assert again == config and again.stored_policy("fp32") == "geep-verify" and again.stored_policy("bf16") is None
    assert again.drop_knobs(["geep", "geep-verify"]) == ["geep-verify"]
    assert again.default_policy == {"int8": "fastbert"}


def test_the_calibration_evidence_round_trips_beside_its_knob_and_older_sections_load_without_it():
    """A format-2 section from before the bound existed loads with no evidence; evidence stored with a knob
    round-trips, is forgotten when the knob is stored again without it or dropped (a new exit table), and a
    damaged record is one line."""
    assert GeepConfig.from_dict(GOOD).calibration == {}
    config = GeepConfig.from_dict(GOOD)
    evidence = {"confidence": 0.9, "drop_bound": 0.82, "drop": 0.47, "dev_rows": 213, "promised": True,
                "max_accuracy_drop": 1.0}
    config.store_knob("fp32", "geep", {"tau": 0.3}, evidence)
    config.store_knob("fp32", "fastbert", {"threshold": 0.4}, {**evidence, "promised": False, "drop_bound": None})
    again = GeepConfig.from_dict(config.to_dict())
    assert again == config and again.stored_evidence("fp32", "geep") == evidence
    assert again.stored_evidence("fp32", "fastbert")["promised"] is False
    assert again.stored_evidence("int8", "geep") is None
    again.store_knob("fp32", "fastbert", {"threshold": 0.5})  # stored by hand: no evidence is kept for it
    assert again.stored_evidence("fp32", "fastbert") is None
    again.drop_knobs(["geep"])
    assert again.calibration == {} and again.default_knobs == {"fp32": {"fastbert": {"threshold": 0.5}}}
    for bad in ("x", {"fp32": "x"}, {"fp32": {"geep": {"drop_bound": "0.8"}}}):
        with pytest.raises(GeepError, match="calibration in config.json must map precision -> policy") as e:
            GeepConfig.from_dict({**GOOD, "calibration": bad})
        assert "\n" not in str(e.value)
