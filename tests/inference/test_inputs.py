"""The Python entry points check what they are handed: a wrong argument is a GeepError naming the argument, the
index and the type, never a bare TypeError, and nothing is silently turned into a string."""

import numpy as np
import pandas as pd
import pytest

from geep import Predictor, build_table, calibrate, predict
from geep.errors import GeepError
from geep.inference import all_exit_logits
from geep.inference.inputs import as_texts, check_batch_size


@pytest.mark.parametrize("texts, message", [
    (None, "texts must be a string or a list of strings, got None"),
    (5, "texts must be a string or a list of strings, got int 5"),
    (b"good movie", "texts must be a string or a list of strings, got bytes b'good movie'"),
    ({"a": 1}, "got dict"),
    ({"good", "bad"}, "got set"),
    (["good", None], "texts[1] must be a string, got None; use '' for an empty text"),
    (["good", b"caf\xc3\xa9"], "texts[1] must be a string, got bytes b'caf\\xc3\\xa9'; decode bytes first"),
    (["a", "b", 3.5], "texts[2] must be a string, got float 3.5"),
])
def test_predict_names_the_argument_index_and_type(make_model, texts, message):
    model = make_model()
    with pytest.raises(GeepError) as e:
        predict(model, texts)
    assert message in str(e.value)
    with pytest.raises(GeepError, match="must be a string"):
        Predictor(model)(texts)


def test_pairs_labels_batch_size_and_model_are_checked(make_model):
    model = make_model()
    with pytest.raises(GeepError, match=r"text_pairs\[0\] must be a string, got int 7"):
        predict(model, ["a"], [7])
    for bad in (1.5, 0, -2, True, "8", None):
        with pytest.raises(GeepError, match="batch_size must be a positive integer, got"):
            predict(model, ["a"], batch_size=bad)
        with pytest.raises(GeepError, match="batch_size must be a positive integer"):
            Predictor(model, batch_size=bad)
    with pytest.raises(GeepError, match=r"labels\[1\] must be a label name or a class id, got None"):
        predict(model, ["a", "b"], policy="oracle", labels=["c0", None])
    with pytest.raises(GeepError, match=r"labels\[0\] is class id 3, but the model has 3 classes"):
        predict(model, ["a"], policy="oracle", labels=[3])
    with pytest.raises(GeepError, match="model must be a MultiExitClassifier, got str 'runs/m'"):
        predict("runs/m", ["a"])


def test_the_evaluation_entry_points_check_texts_too(make_model):
    model = make_model()
    with pytest.raises(GeepError, match=r"texts\[0\] must be a string, got None"):
        build_table(model, [None, "a"])
    with pytest.raises(GeepError, match="texts must be a string or a list of strings, got int 5"):
        calibrate(model, 5, ["c0"], max_accuracy_drop=1)
    with pytest.raises(GeepError, match=r"texts\[1\] must be a string, got bytes"):
        all_exit_logits(model, ["a", b"b"])


def test_what_is_accepted():
    assert as_texts("one") == ["one"]
    assert as_texts(("a", "b")) == ["a", "b"]
    assert as_texts(pd.Series(["a", "b"])) == ["a", "b"]
    assert as_texts(t for t in ["a", ""]) == ["a", ""]
    assert check_batch_size(8) == 8
    assert check_batch_size(np.int64(4)) == 4
