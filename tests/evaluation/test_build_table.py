"""Choosing the build threshold S on dev: on too few rows the choice is noise, and the user is told."""

import pytest

from geep.evaluation.build_table import NOISY_DEV_ROWS, auto_build_threshold
from tests.helpers import random_texts


@pytest.mark.parametrize("rows, warned", [(2, True), (NOISY_DEV_ROWS - 1, True), (NOISY_DEV_ROWS, False)])
def test_a_threshold_chosen_on_few_dev_rows_is_warned_about(make_model, caplog, rows, warned):
    model = make_model()
    texts = random_texts(rows, seed=4)
    labels = [f"c{i % 3}" for i in range(rows)]
    with caplog.at_level("WARNING", logger="geep.evaluation.build_table"):
        S = auto_build_threshold(model, texts, labels)
    assert 0.0 <= S <= 1.0
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert bool(messages) == warned
    if warned:
        assert messages == [f"the build threshold S is chosen on only {rows} dev rows: below {NOISY_DEV_ROWS} the "
                            "choice is noise; pass more dev rows or --build-threshold"]
