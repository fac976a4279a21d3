"""`geep train` and `geep info` from the command line: end to end on a tiny model, and every bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from geep.cli.main import main
from geep.cli.train import split_rows
from geep.data import ColumnData
from tests.helpers import FILLER, save_tiny_encoder, sentence_transformers_files, synthetic

FAST = ["--max-length", "16", "--epochs", "1", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-enc"))


def write_csv(path: Path, n: int = 60, seed: int = 0, pair: bool = False) -> Path:
    texts, labels = synthetic(n, seed)
    if pair:
        header, lines = "id,text,pair,label", [f"{i},{t},a film,{y}" for i, (t, y) in enumerate(zip(texts, labels))]
    else:
        header, lines = "id,text,label", [f"{i},{t},{y}" for i, (t, y) in enumerate(zip(texts, labels))]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors (unknown choice)
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_train_then_info_end_to_end(encoder_dir, tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", n=80)
    out = tmp_path / "model"
    rc, stdout, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--output", str(out),
                           "--table-fraction", "0.2", "--pooling", "mean", *FAST], capsys)
    assert rc == 0, err
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json", "training_args.json",
                 "README.md", "table_data.jsonl"):
        assert (out / name).is_file(), name
    assert "(teacher)" in stdout
    args = json.loads((out / "training_args.json").read_text())
    sizes = args["data_sizes"]
    assert sizes["train"] + sizes["dev"] + sizes["table"] == 80
    assert sizes["table"] == 16 and sizes["dev"] > 0
    assert set(args["dev_accuracy"]) == {"1", "2", "3", "4"}
    assert args["args"]["objective"] == "geep" and args["train_seconds"] > 0
    table = [json.loads(line) for line in (out / "table_data.jsonl").read_text().splitlines()]
    assert len(table) == 16 and set(table[0]) == {"text", "label"}
    card = (out / "README.md").read_text()
    assert "| exit layer | dev accuracy |" in card and "from_pretrained" in card

    rc, stdout, err = cli(["info", str(out)], capsys)
    assert rc == 0, err
    assert "per-exit dev accuracy" in stdout and "(teacher)" in stdout
    assert "labels (2):" in stdout and "bad, good" in stdout and "objective:      geep" in stdout


def test_recipe_is_recorded_in_args_config_card_and_info(encoder_dir, tmp_path, capsys):
    """A recipe that matches passes trains --epochs + --distil-epochs; every record says which recipe it was."""
    from geep.modeling.objectives import RECIPES

    data = write_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--recipe", "hinton",
                      "--distil-epochs", "1", "--output", str(out), *FAST], capsys)  # FAST: --epochs 1
    assert rc == 0, err
    args = json.loads((out / "training_args.json").read_text())
    assert args["recipe"] == RECIPES["hinton"].to_dict()
    assert args["stages"][0]["epochs"] == 2 and [h["epoch"] for h in args["history"]] == [1, 2]
    assert args["train_cpu_seconds"] > 0
    assert json.loads((out / "config.json").read_text())["geep"]["recipe"] == "hinton"
    card = (out / "README.md").read_text()
    assert "recipe `hinton`" in card and "temperature 2" in card and "geep 2 epoch(s)" in card
    rc, stdout, _ = cli(["info", str(out)], capsys)
    assert rc == 0 and "objective:      geep (recipe hinton)" in stdout


def test_default_geep_recipe_and_other_objectives_record_none(encoder_dir, tmp_path, capsys):
    from geep.modeling.objectives import DEFAULT_RECIPE

    data = write_csv(tmp_path / "train.csv", n=30)
    for objective, recipe in (("geep", DEFAULT_RECIPE), ("pabee", None)):
        out = tmp_path / objective
        rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", objective,
                          "--output", str(out), *FAST], capsys)
        assert rc == 0, err
        args = json.loads((out / "training_args.json").read_text())
        assert (args["recipe"] or {}).get("name") == recipe
        assert json.loads((out / "config.json").read_text())["geep"]["recipe"] == recipe


def write_three_class_csv(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Texts of filler words plus one of three topic words; the label is that word (three classes, so the ensemble
    objective's diversity term, which needs two wrong classes, is not 0)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = ("sport", "vote", "stock")[i % 3]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        words.insert(rng.randint(0, len(words)), label)
        lines.append(f"{i},{' '.join(words)},{label}")
    path.write_text("id,text,label\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("objective", ["sdn", "ensemble"])
def test_survey_objectives_train_end_to_end_and_answer_by_vote(objective, encoder_dir, tmp_path, capsys):
    data = write_three_class_csv(tmp_path / "train.csv")
    out = tmp_path / objective
    rc, stdout, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", objective,
                           "--output", str(out), *FAST], capsys)
    assert rc == 0, err
    args = json.loads((out / "training_args.json").read_text())
    assert args["args"]["objective"] == objective and args["recipe"] is None
    assert [(s["stage"], s["epochs"]) for s in args["stages"]] == [(objective, 1)]
    assert [h["stage"] for h in args["history"]] == [objective]
    assert set(args["dev_accuracy"]) == {"1", "2", "3", "4"}
    assert json.loads((out / "config.json").read_text())["geep"]["objective"] == objective
    rc, stdout, _ = cli(["info", str(out)], capsys)
    assert rc == 0 and f"objective:      {objective}\n" in stdout
    rc, _, err = cli(["predict", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "p.jsonl"),
                      "--policy", "vote", "--no-progress"], capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {r["prediction"] for r in rows} <= {"sport", "vote", "stock"}


def test_sdn_trains_a_regression_model_through_its_own_loss(encoder_dir, tmp_path, capsys):
    data = tmp_path / "reg.jsonl"
    data.write_text("".join(json.dumps({"text": f"good {i}", "label": i / 4}) + "\n" for i in range(40)))
    out = tmp_path / "reg"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", "sdn",
                      "--output", str(out), *FAST], capsys)
    assert rc == 0, err
    args = json.loads((out / "training_args.json").read_text())
    assert args["task"]["name"] == "regression" and [h["stage"] for h in args["history"]] == ["sdn"]


@pytest.mark.parametrize("task, rows", [
    ("regression", [{"text": f"good {i}", "label": float(i)} for i in range(12)]),
    ("multi-label", [{"text": f"good {i}", "label": ["a", "b"][: 1 + i % 2]} for i in range(12)]),
])
def test_ensemble_on_another_task_is_one_line_and_exit_2(task, rows, encoder_dir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", "ensemble",
                      "--output", str(out), *FAST], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--objective ensemble applies to classification only, not {task}" in err
    assert not out.exists()


def test_pooling_and_max_length_left_to_geep_fit_the_backbone(tmp_path, capsys):
    """A sentence-transformers backbone (mean pooling, 64 positions) trained with neither --pooling nor
    --max-length: mean pooling and 64 tokens, and the config, training_args.json, info and the card say why."""
    encoder = save_tiny_encoder(tmp_path / "st-encoder")
    sentence_transformers_files(encoder, {"mean_tokens": True, "cls_token": False})
    data = write_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder), "--train", str(data), "--output", str(out), "--epochs", "1",
                      "--batch-size", "16", "--no-progress"], capsys)
    assert rc == 0, err
    geep_config = json.loads((out / "config.json").read_text())["geep"]
    assert geep_config["pooling"] == "mean" and geep_config["max_length"] == 64
    assert "sentence-transformers model trained with mean pooling" in geep_config["auto_settings"]["pooling"]
    resolved = json.loads((out / "training_args.json").read_text())["resolved"]
    assert resolved["pooling"] == "mean" and resolved["why"] == geep_config["auto_settings"]
    card = (out / "README.md").read_text()
    assert "**Pooling chosen by geep**: mean: the backbone is a sentence-transformers model" in card
    assert "the model's 64 positions" in card
    rc, stdout, _ = cli(["info", str(out)], capsys)
    assert rc == 0 and "(chosen by geep: mean: the backbone is a sentence-transformers" in stdout
    assert "max length:     64\n                (chosen by geep: 64: the smallest of" in stdout


def test_sentence_pairs_table_data_and_dev(encoder_dir, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", n=40, pair=True)
    dev = write_csv(tmp_path / "dev.csv", n=12, seed=1, pair=True)
    table = write_csv(tmp_path / "table.csv", n=10, seed=2, pair=True)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(train), "--dev", str(dev),
                      "--table-data", str(table), "--text-pair-column", "pair", "--objective", "deebert",
                      "--head", "linear", "--exit-layers", "2", "--distil-epochs", "1", "--output", str(out),
                      *FAST], capsys)
    assert rc == 0, err
    args = json.loads((out / "training_args.json").read_text())
    assert args["data_sizes"] == {"train": 40, "dev": 12, "table": 10}  # nothing held out of --train
    assert set(args["dev_accuracy"]) == {"2", "4"}
    assert [h["stage"] for h in args["history"]] == ["fine-tune", "exits"]
    rows = [json.loads(line) for line in (out / "table_data.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[0]["text_pair"] == "a film"


def test_no_table_fraction_writes_no_table_file(encoder_dir, tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", n=30)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--table-fraction", "0",
                      "--freeze-backbone", "--output", str(out), *FAST], capsys)
    assert rc == 0, err
    assert not (out / "table_data.jsonl").exists()
    assert json.loads((out / "training_args.json").read_text())["data_sizes"]["table"] == 0


@pytest.mark.parametrize("max_train", [None, 50])
def test_train_table_and_dev_slices_never_overlap(max_train):
    n = 120
    labels = [["a", "b", "c"][i % 3] for i in range(n)]
    data = ColumnData(texts=[f"row {i}" for i in range(n)], text_pairs=None, labels=labels, ids=None)

    class Args:
        train, dev, table_data, table_fraction, seed, max_train_samples = "x.csv", None, None, 0.1, 3, max_train

    train, table, dev = split_rows(Args, data)
    sets = [set(train.texts), set(table.texts), set(dev.texts)]
    assert sum(map(len, sets)) == (max_train or n)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert abs(len(table) - 0.1 * (max_train or n)) < 3  # largest remainder per class
    for part in (table, dev):
        assert set(part.labels) == {"a", "b", "c"}  # stratified


# ----------------------------------------------------------------------------------------------- bad input
def _bad_inputs(tmp: Path, good: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "data.txt").write_text("text,label\nhi,a\n")
    (tmp / "header_only.csv").write_text("text,label\n")
    latin = tmp / "latin.csv"
    latin.write_bytes("text,label\ncost \u00a3 good,good\nbad film,bad\n".encode("latin-1"))
    (tmp / "no_label.csv").write_text("text,label\ngood,good\nbad,bad\nthe film,\n")
    (tmp / "dev_unseen.csv").write_text("text,label\ngood,good\nso so,meh\n")
    (tmp / "one_label.csv").write_text("text,label\ngood,good\ngreat,good\n")
    return {
        "missing file": (["--train", str(tmp / "nope.csv")], "no such file"),
        "unknown extension": (["--train", str(tmp / "data.txt")], "unsupported file type"),
        "missing column": (["--train", str(good), "--text-column", "sentence"], "its columns are: id, text, label"),
        "empty data": (["--train", str(tmp / "header_only.csv")], "has no rows"),
        "unseen dev label": (["--train", str(good), "--dev", str(tmp / "dev_unseen.csv")], "'meh'"),
        "undecodable bytes": (["--train", str(latin)], "--encoding"),
        "missing label": (["--train", str(tmp / "no_label.csv")], "row 3"),
        "one label": (["--train", str(tmp / "one_label.csv")], "only one label"),
        "unknown objective": (["--train", str(good), "--objective", "magic"], "invalid choice: 'magic'"),
        "unknown head": (["--train", str(good), "--head", "mlp"], "invalid choice: 'mlp'"),
        "unknown pooling": (["--train", str(good), "--pooling", "max"], "invalid choice: 'max'"),
        "bad exit layers": (["--train", str(good), "--exit-layers", "1,x"], "--exit-layers"),
        "exit layer out of range": (["--train", str(good), "--exit-layers", "2,9"], "1..4"),
        "bad table fraction": (["--train", str(good), "--table-fraction", "1.5"], "--table-fraction"),
        "max length too long": (["--train", str(good), "--max-length", "500"], "64 positions"),
        "unseen table label": (["--train", str(good), "--table-data", str(tmp / "dev_unseen.csv")], "'meh'"),
        "unknown recipe": (["--train", str(good), "--recipe", "magic"], "invalid choice: 'magic'"),
        "recipe without geep": (["--train", str(good), "--objective", "fastbert", "--recipe", "teacher"],
                                "--recipe applies to --objective geep only"),
    }


BAD_CASES = ["missing file", "unknown extension", "missing column", "empty data", "unseen dev label",
             "undecodable bytes", "missing label", "one label", "unknown objective", "unknown head",
             "unknown pooling", "bad exit layers", "exit layer out of range", "bad table fraction",
             "max length too long", "unseen table label", "unknown recipe", "recipe without geep"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_exit_2(case, encoder_dir, tmp_path, capsys):
    good = write_csv(tmp_path / "good.csv", n=20)
    argv, expected = _bad_inputs(tmp_path, good)[case]
    out = tmp_path / "out"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--output", str(out), *FAST, *argv], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.strip(), err  # exactly one line
    assert expected in err
    assert not out.exists()  # validated before anything was written


def test_bad_model_and_output(encoder_dir, tmp_path, capsys):
    good = write_csv(tmp_path / "good.csv", n=20)
    rc, _, err = cli(["train", "--model", str(tmp_path / "nope"), "--train", str(good),
                      "--output", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no model directory" in err and err.count("\n") == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(good), "--output", str(busy)], capsys)
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1


def test_output_is_never_the_model_nor_a_directory_holding_the_data(encoder_dir, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good = write_csv(data_dir / "good.csv", n=20)
    encoder_files = sorted(p.name for p in encoder_dir.iterdir())
    for out, expected in ((encoder_dir, "inside the model directory"), (data_dir, "holds the input")):
        rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(good), "--output", str(out),
                          "--overwrite", *FAST], capsys)
        assert rc == 2 and expected in err and err.count("\n") == 1, err
    assert sorted(p.name for p in encoder_dir.iterdir()) == encoder_files
    assert sorted(p.name for p in data_dir.iterdir()) == ["good.csv"]


def test_fine_tuned_model_labels_must_match(tmp_path, capsys):
    ft = save_tiny_encoder(tmp_path / "ft", fine_tuned=True, labels=("neg", "pos"))
    good = write_csv(tmp_path / "good.csv", n=20)
    rc, _, err = cli(["train", "--model", str(ft), "--train", str(good), "--output", str(tmp_path / "o"),
                      "--freeze-backbone", *FAST], capsys)
    assert rc == 2 and "differ from the model's" in err and err.count("\n") == 1


def test_info_bad_directories(encoder_dir, tmp_path, capsys):
    for target, expected in ((tmp_path / "nope", "no model directory"), (tmp_path, "no config.json"),
                             (encoder_dir, "not a geep model")):
        rc, _, err = cli(["info", str(target)], capsys)
        assert rc == 2 and expected in err and err.count("\n") == 1, err
