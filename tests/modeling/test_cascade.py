"""A cascade's directory and what it refuses: members that disagree on labels, task or tokenisation, a member
directory missing or not a geep model (one line each, nothing written)."""

from __future__ import annotations

import json

import pytest

from geep.errors import GeepError
from geep.modeling.cascade import CASCADE_NAME, Cascade, check_members, load_model
from geep.modeling.model import MultiExitClassifier
from tests.helpers import random_texts, save_tiny_encoder, tiny_member

TEXTS = random_texts(24, seed=2)


@pytest.fixture
def members(tmp_path):
    tiny_member(tmp_path / "small", 1, [1], seed=0, texts=TEXTS)
    tiny_member(tmp_path / "large", 2, [1, 2], seed=1, texts=TEXTS)
    return tmp_path


def test_a_saved_cascade_names_its_members_relative_to_itself(members):
    out = members / "runs" / "c"
    cascade = Cascade.from_members([members / "small", members / "large"], out)
    cascade.save_pretrained(out)
    stored = json.loads((out / CASCADE_NAME).read_text())
    assert stored["members"] == [str((members / "small").resolve()), str((members / "large").resolve())]
    assert stored["label_names"] == ["c0", "c1", "c2"] and stored["temperatures"] == {}
    loaded = load_model(out)
    assert isinstance(loaded, Cascade) and loaded.num_layers == 3 and loaded.exit_layers == [1, 2, 3]
    assert isinstance(load_model(members / "small"), MultiExitClassifier)


def test_relative_member_paths_are_stored_relative_to_the_cascade(members, monkeypatch):
    monkeypatch.chdir(members)
    cascade = Cascade.from_members(["small", "large"], "runs/c")
    cascade.save_pretrained("runs/c")
    assert json.loads((members / "runs/c" / CASCADE_NAME).read_text())["members"] == ["../../small", "../../large"]
    monkeypatch.chdir(members / "runs")  # loaded from anywhere: the paths are the cascade directory's
    assert Cascade.from_pretrained("c").members[1].num_layers == 2


def test_members_that_disagree_on_labels_are_refused(members):
    tiny_member(members / "other", 1, [1], seed=2, texts=TEXTS, labels=("c0", "c1", "x"))
    with pytest.raises(GeepError, match="disagree on labels"):
        Cascade.from_members([members / "small", members / "other"])


def test_a_member_that_is_not_a_classifier_is_refused(members):
    small, large = (MultiExitClassifier.from_pretrained(members / n) for n in ("small", "large"))
    large.config.task = "regression"  # the cascade rule reads class probabilities: every member is a classifier
    with pytest.raises(GeepError, match="large is a regression model: a cascade's rule reads each member's class"):
        check_members([small, large], ["small", "large"])


def test_members_that_tokenise_differently_are_refused(members):
    large = MultiExitClassifier.from_pretrained(members / "large")
    large.config.max_length = 8
    with pytest.raises(GeepError, match="tokenise differently"):
        check_members([MultiExitClassifier.from_pretrained(members / "small"), large], ["small", "large"])


@pytest.mark.parametrize("case", ["missing", "encoder", "cascade", "one"])
def test_bad_members_are_one_line(members, case):
    if case == "missing":
        paths, match = [members / "small", members / "nope"], "no directory at"
    elif case == "encoder":
        paths, match = [members / "small", save_tiny_encoder(members / "enc")], "not a geep model"
    elif case == "cascade":
        Cascade.from_members([members / "small", members / "large"]).save_pretrained(members / "c")
        paths, match = [members / "small", members / "c"], "itself a cascade"
    else:
        paths, match = [members / "small"], "at least 2 members"
    with pytest.raises(GeepError, match=match) as e:
        Cascade.from_members(paths)
    assert "\n" not in str(e.value)


def test_a_damaged_cascade_json_is_one_line(members):
    out = members / "c"
    Cascade.from_members([members / "small", members / "large"]).save_pretrained(out)
    data = json.loads((out / CASCADE_NAME).read_text())
    data["temperatures"] = {"fp32": [1.0, 2.0]}  # two temperatures for one boundary
    (out / CASCADE_NAME).write_text(json.dumps(data))
    with pytest.raises(GeepError, match="damaged"):
        load_model(out)
    (out / CASCADE_NAME).write_text("{")
    with pytest.raises(GeepError, match="cannot read"):
        load_model(out)
