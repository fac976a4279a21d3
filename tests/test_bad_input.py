"""The bad input a new user met (issue 20, item 6), each as one GeepError from the API and, from the command line,
one line on stderr and exit status 2 with nothing written; and the surprises, each decided one way (README).

The server's cases are in tests/serving/test_app.py and tests/cli/test_serve.py, `--ray`'s in
tests/integrations/test_ray_data.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import geep
from geep.cli.main import main
from geep.errors import GeepError
from geep.exit_table import ExitTable
from geep.modeling import GeepConfig, MultiExitClassifier
from geep.training.loop import TrainingArguments
from tests.helpers import random_texts, save_tiny_encoder, synthetic, write_csv


def one_line_error(capsys, argv: list[str]) -> str:
    """Runs the command; asserts exit status 2 and exactly one line on stderr, which it returns."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def listing(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: to see that a refused command changed nothing."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def model_dir(make_model, tmp_path) -> Path:
    make_model(exit_layers=[1, 2, 4]).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def csv_input(tmp_path) -> Path:
    return write_csv(tmp_path / "in.csv", ["id", "text"], [("1", "a good film"), ("2", "the plot was bad")])


def predict_argv(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(model_dir), "--input", str(data), "--output", str(out), "--no-progress",
            *extra]


# ------------------------------------------------------------------------------------------- a model directory
@pytest.mark.parametrize("damage", ["truncated tokenizer.json", "tokenizer_config.json not JSON"])
def test_a_damaged_tokenizer_file_is_one_line(model_dir, csv_input, tmp_path, capsys, damage):
    if damage.startswith("truncated"):
        path = model_dir / "tokenizer.json"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        (model_dir / "tokenizer_config.json").write_text("{'do_lower_case': True,")
    with pytest.raises(GeepError, match=f"cannot read the tokenizer in {model_dir}"):
        MultiExitClassifier.from_pretrained(model_dir)
    err = one_line_error(capsys, predict_argv(model_dir, csv_input, tmp_path / "out.jsonl"))
    assert "cannot read the tokenizer" in err
    assert not (tmp_path / "out.jsonl").exists()


def save_table(model_dir: Path, table: ExitTable) -> None:
    """``table`` in place of the model directory's exit table, config.json naming it."""
    config = json.loads((model_dir / "config.json").read_text())
    config["geep"]["exit_table"] = {"file": "exit_table.safetensors", "build_threshold": 0.5, **table.params()}
    (model_dir / "config.json").write_text(json.dumps(config))
    table.save(model_dir / "exit_table.safetensors")


@pytest.mark.parametrize("layers, vocab", [(6, 99), (4, 49)])  # another number of layers; half the vocabulary
def test_an_exit_table_built_for_another_model_is_refused_when_the_model_loads(model_dir, csv_input, tmp_path,
                                                                              capsys, layers, vocab):
    table = ExitTable(exit_counts=torch.ones(layers, dtype=torch.long),
                      unigram_counts=torch.ones((vocab, layers), dtype=torch.long), bigram_keys=None,
                      bigram_counts=None, num_layers=layers, vocab_size=vocab, special_ids=[0, 1, 2, 3, 4], ngram=1,
                      min_count=1, smoothing=1.0)
    save_table(model_dir, table)
    words = f"was built for {layers} layers and a vocabulary of {vocab} tokens, but the model has 4 layers and 99"
    with pytest.raises(GeepError, match=words):
        MultiExitClassifier.from_pretrained(model_dir)
    for policy in ("full", "geep"):  # at load: even a policy that never reads the table
        err = one_line_error(capsys, predict_argv(model_dir, csv_input, tmp_path / "out.jsonl", "--policy", policy))
        assert words in err and "geep build-table" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_duplicate_label_names_are_refused(model_dir, csv_input, tmp_path, capsys):
    """Decided: refused (two classes of one name: a predicted name could not say which class it was)."""
    with pytest.raises(GeepError, match="label names must be distinct; repeated: 'a'"):
        GeepConfig(num_layers=4, label_names=["a", "b", "a"])
    config = json.loads((model_dir / "config.json").read_text())
    config["geep"]["label_names"] = ["c0", "c1", "c0"]
    (model_dir / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, predict_argv(model_dir, csv_input, tmp_path / "out.jsonl"))
    assert "label names must be distinct" in err


def test_a_knob_damaged_in_config_json_is_said_as_such(model_dir, csv_input, tmp_path, capsys):
    """Not "the fastbert threshold must be in [0, 1], got 5", a threshold the user never passed."""
    config = json.loads((model_dir / "config.json").read_text())
    config["geep"]["default_knobs"] = {"fp32": {"fastbert": {"threshold": 5.0}}}
    (model_dir / "config.json").write_text(json.dumps(config))
    model = MultiExitClassifier.from_pretrained(model_dir)
    with pytest.raises(GeepError, match=r"the fastbert knob calibrated in config.json \(threshold=5.0\) is damaged"):
        geep.predict(model, ["a good film"], policy="fastbert")
    err = one_line_error(capsys, predict_argv(model_dir, csv_input, tmp_path / "out.jsonl", "--policy", "fastbert"))
    assert "calibrated in config.json (threshold=5.0) is damaged" in err and "geep calibrate" in err
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("train")
    texts, labels = synthetic(40, seed=0)
    return write_csv(directory / "train.csv", ["text", "label"], zip(texts, labels))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def train_argv(encoder: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(encoder), "--train", str(data), "--output", str(out), "--epochs", "1",
            "--batch-size", "8", "--max-length", "16", "--no-progress", *extra]


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-1e-5"),
                                         ("--head-lr", "inf"), ("--head-lr", "nan"), ("--head-lr", "0")])
def test_a_learning_rate_that_is_not_a_finite_positive_number_is_refused(encoder, train_csv, tmp_path, capsys,
                                                                         flag, value):
    err = one_line_error(capsys, train_argv(encoder, train_csv, tmp_path / "out", f"{flag}={value}"))
    assert f"{flag} must be a finite number above 0, got {float(value)}" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(GeepError, match="must be a finite number above 0"):
        TrainingArguments(**{flag[2:].replace("-", "_"): float(value)})


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_refused(encoder, train_csv, tmp_path, capsys, seed):
    err = one_line_error(capsys, train_argv(encoder, train_csv, tmp_path / "out", "--seed", seed))
    assert f"--seed must be in 0..{2**32 - 1}, got {seed}" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(GeepError, match="seed must be an integer in 0.."):
        TrainingArguments(seed=int(seed))


def test_a_loss_that_turns_nan_stops_training_and_keeps_nothing(encoder, train_csv, tmp_path, capsys):
    """A finite but absurd learning rate: the weights blow up within a few steps, the loss turns NaN; training stops
    at that step with one line, and an earlier output given to --overwrite is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier run")
    err = one_line_error(capsys, train_argv(encoder, train_csv, out, "--lr", "1e30", "--head-lr", "1e30",
                                            "--overwrite"))
    assert "the training loss became nan at stage geep, epoch 1, step" in err and "training stopped" in err
    assert listing(out) == {"earlier.txt": b"an earlier run"}


# --------------------------------------------------------------------------------------------------- texts
def test_a_lone_surrogate_is_one_line_from_the_api_and_from_a_file(make_model, tmp_path, capsys):
    model = make_model()
    with pytest.raises(GeepError, match=r"texts\[1\] is not valid Unicode text: a lone surrogate '\\ud800' at "
                                        r"character 4"):
        geep.predict(model, ["fine", "good\ud800 film"])
    with pytest.raises(GeepError, match=r"text_pairs\[0\] is not valid Unicode"):
        geep.predict(model, ["fine"], ["\udfff"])
    model.save_pretrained(tmp_path / "model")
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "a good film"}\n{"text": "bad \\ud800 plot"}\n')  # a JSON escape of half a pair
    err = one_line_error(capsys, predict_argv(tmp_path / "model", data, tmp_path / "out.jsonl"))
    assert "line 2 is not valid Unicode text: a lone surrogate" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("value, kind", [("5", "a number"), ('["a", "b"]', "a list"), ("true", "a boolean"),
                                         ('{"a": 1}', "an object")])
def test_a_jsonl_text_that_is_not_a_string_is_refused(model_dir, tmp_path, capsys, value, kind):
    """Decided: refused, naming the row (it was labelled as the text "5"; and a column of mixed types came back as
    JSON, so even its strings were read with their quotes)."""
    data = tmp_path / "in.jsonl"
    data.write_text(f'{{"text": "a good film"}}\n{{"text": {value}}}\n')
    err = one_line_error(capsys, predict_argv(model_dir, data, tmp_path / "out.jsonl"))
    assert f"row 2 of column 'text' is {kind}, not a text" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_a_jsonl_column_of_strings_and_nulls_reads_each_string_as_it_is(model_dir, tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1, "text": "a good film"}\n{"id": 2, "text": null}\n')
    assert main(predict_argv(model_dir, data, tmp_path / "out.jsonl")) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    model = MultiExitClassifier.from_pretrained(model_dir)
    expected = geep.predict(model, ["a good film", ""], policy="full")
    assert [r["prediction"] for r in rows] == expected.labels


@pytest.mark.parametrize("content, words", [
    ("id,text\n1,a good film\n2,bad, very bad\n", "line 3 has 3 fields but the header has 2 (quote a field that "
                                                  "holds a ',')"),
    ('id,text\n1,"a good film\n2,bad\n', "a quoted field that starts on line 2 is never closed"),
])
def test_a_broken_csv_is_said_in_geep_s_words_not_pandas(model_dir, tmp_path, capsys, content, words):
    """Decided: the errors a user meets in a CSV (a row with an unquoted comma, a quote never closed) are said in
    geep's words with the line; any other error of the reader is its own first line after the file name."""
    data = tmp_path / "in.csv"
    data.write_text(content)
    err = one_line_error(capsys, predict_argv(model_dir, data, tmp_path / "out.jsonl"))
    assert err == f"error: could not read {data}: {words}" if "fields" in words else words in err, err
    assert "C error" not in err and "tokenizing" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_empty_texts_are_answered_like_any_other_text(make_model, tmp_path, capsys, caplog):
    """The one rule (README, "Empty texts"): "", whitespace-only and missing texts are answered, all alike (the
    model reads its special tokens alone); geep predict says how many rows had no text."""
    model = make_model()
    with torch.no_grad():  # [CLS] [SEP]: what an empty text is
        alone = model(torch.tensor([[2, 3]]), torch.ones(1, 2, dtype=torch.long)).exit_logits[-1].softmax(-1)
    out = geep.predict(model, ["", "   ", "\n\t"], policy="full")
    torch.testing.assert_close(out.probabilities, alone.expand(3, -1), atol=1e-6, rtol=0)
    model.save_pretrained(tmp_path / "model")
    data = write_csv(tmp_path / "in.csv", ["id", "text"], [("1", ""), ("2", "  "), ("3", "a good film")])
    with caplog.at_level("WARNING"):
        assert main(predict_argv(tmp_path / "model", data, tmp_path / "out.jsonl")) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3"] and rows[0]["probabilities"] == rows[1]["probabilities"]
    assert rows[0]["probability"] == pytest.approx(float(alone.max()), abs=1e-6)
    assert "2 of 3 rows have no text in column 'text'" in caplog.text


def test_a_pair_given_to_a_model_trained_on_single_texts_is_read_as_a_pair(make_model):
    """Decided: accepted. geep cannot know what a model was trained on (config.json's text_pair_column names a
    column to read, and a model trained in Python has none), so a pair is tokenised as a pair,
    [CLS] text [SEP] pair [SEP] with token types 0 then 1, as transformers does, whatever the model learned."""
    model = make_model()
    vocab = model.tokenizer.get_vocab()
    ids = [2, vocab["good"], vocab["film"], 3, vocab["bad"], vocab["plot"], 3]
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        logits = model(torch.tensor([ids]), torch.ones(1, 7, dtype=torch.long), types).exit_logits[-1]  # (1, C)
    out = geep.predict(model, ["good film"], ["bad plot"], policy="full")
    torch.testing.assert_close(out.probabilities, logits.softmax(-1), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ knobs and policies
def test_knob_true_is_not_the_knob_1(make_model):
    model = make_model()
    for policy in ("pabee", "fastbert", "confidence"):
        with pytest.raises(GeepError, match=f"the {policy} threshold must be .*, got True"):
            geep.predict(model, ["a good film"], policy=policy, knob=True)


def test_an_empty_policy_name_is_not_the_default(make_model, model_dir, csv_input, tmp_path, capsys):
    """Decided: `policy=""` is an unknown policy, as everywhere else; None is what asks for the default."""
    model = make_model()
    with pytest.raises(GeepError, match="unknown policy ''"):
        geep.predict(model, ["a good film"], policy="")
    with pytest.raises(GeepError, match="unknown policy ''"):
        geep.Predictor(model, "")
    assert geep.predict(model, ["a good film"], policy=None).labels  # the default: full here
    err = one_line_error(capsys, predict_argv(model_dir, csv_input, tmp_path / "out.jsonl", "--policy", ""))
    assert "unknown policy ''" in err


# -------------------------------------------------------------------------------------------------- calibrate
def test_calibrate_with_texts_and_labels_of_different_lengths_stores_nothing(make_model):
    model = make_model()
    texts = random_texts(12, seed=1)
    labels = [f"c{i % 3}" for i in range(11)]
    with pytest.raises(GeepError, match="11 labels for 12 texts; give one per text"):
        geep.calibrate(model, texts, labels, max_accuracy_drop=1.0)
    with pytest.raises(GeepError, match="3 text pairs for 12 texts"):
        geep.calibrate(model, texts, labels + ["c0"], texts[:3], max_accuracy_drop=1.0)
    assert model.config.default_knobs == {} and model.config.default_policy == {}


@pytest.fixture
def labelled(tmp_path) -> Path:
    texts = random_texts(20, seed=2)
    return write_csv(tmp_path / "dev.csv", ["text", "label"], [(t, f"c{i % 3}") for i, t in enumerate(texts)])


@pytest.mark.parametrize("flags, words", [
    (["--max-accuracy-drop", "101"], "--max-accuracy-drop must be in [0, 100] points, got 101"),
    (["--max-accuracy-drop", "-1"], "--max-accuracy-drop must be in [0, 100] points, got -1"),
    (["--max-accuracy-drop", "1", "--grid-points", "2000000"], "--grid-points must be in 2..1001, got 2000000"),
    (["--max-accuracy-drop", "1", "--grid-points", "1"], "--grid-points must be in 2..1001, got 1"),
])
def test_calibrate_s_flags_out_of_range_change_nothing(model_dir, labelled, capsys, flags, words):
    """Decided: an accuracy drop is 0..100 points, and at most 1001 knobs per policy are scored."""
    before = listing(model_dir)
    err = one_line_error(capsys, ["calibrate", "--model", str(model_dir), "--dev", str(labelled), *flags])
    assert words in err
    assert listing(model_dir) == before


def test_bench_s_grid_points_out_of_range_writes_nothing(model_dir, labelled, tmp_path, capsys):
    err = one_line_error(capsys, ["bench", "--model", str(model_dir), "--data", str(labelled), "--output",
                                  str(tmp_path / "bench"), "--grid-points", "2000000"])
    assert "--grid-points must be in 2..1001, got 2000000" in err
    assert not (tmp_path / "bench").exists()

