"""`geep predict --ray` on a local Ray (2 cores): the same answers as single-process predict, the work shared as far
as Ray promises, an actor killed mid-job, --overwrite, and every bad input before Ray starts. Every wait is bounded:
Ray's own calls take no timeout, so each test fails after TIMEOUT_S (about 12x the slowest one here, 14 s on 2 cores)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import geep
from geep.cli.main import main
from geep.errors import GeepError
from tests.helpers import make_decisive, random_texts, write_csv

ray = pytest.importorskip("ray")
ray_data = pytest.importorskip("geep.integrations.ray_data")

TIMEOUT_S = 180
pytestmark = pytest.mark.timeout(TIMEOUT_S)

N_FILES, ROWS = 3, 14  # 42 rows over three files; ids with leading zeros must survive as strings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import BertModel

    from geep.evaluation import build_table
    from geep.modeling import GeepConfig, MultiExitClassifier
    from tests.helpers import tiny_bert_config, tiny_tokenizer

    directory = tmp_path_factory.mktemp("ray-model")
    torch.manual_seed(0)
    config = GeepConfig(num_layers=4, label_names=["c0", "c1", "c2"])
    model = MultiExitClassifier(BertModel(tiny_bert_config(4)), config, tiny_tokenizer(directory / "tok")).eval()
    make_decisive(model, random_texts(40, seed=1))
    build_table(model, random_texts(60, seed=2), build_threshold=0.5, min_count=1)
    model.save_pretrained(directory / "model")
    return directory / "model"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ray-in")
    texts = random_texts(N_FILES * ROWS, seed=3)
    for f in range(N_FILES):
        rows = [(f"{f}{i:03d}", texts[f * ROWS + i]) for i in range(ROWS)]
        write_csv(directory / f"part-{f}.csv", ["id", "text"], rows)
    return directory


def single_process(model_dir, inputs, tmp_path, policy, knob, precision="fp32") -> dict[str, dict]:
    """Single-process `geep predict` of every file, by id."""
    rows = {}
    for path in sorted(inputs.iterdir()):
        out = tmp_path / f"{path.stem}.jsonl"
        argv = ["predict", "--model", str(model_dir), "--input", str(path), "--output", str(out), "--policy", policy,
                "--precision", precision, "--no-progress"] + ([] if knob is None else ["--threshold", str(knob)])
        assert main(argv) == 0
        rows.update({r["id"]: r for r in map(json.loads, out.read_text().splitlines())})
    return rows


# ---- bad input fails before Ray starts (these run first, while no Ray is up in this process)
@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or directory"),
    ("mixed-columns", "have different columns"),
    ("mixed-types", "mixes file types"),
    ("no-text", "has no column 'text'; its columns are: id, body"),
    ("empty-dir", "holds no .csv"),
    # the rows of JSON lines are checked too (where Ray printed pages of its tasks' tracebacks), and parquet's types
    ("broken-jsonl", "b.jsonl: line 3 is not JSON: Unterminated string starting at"),
    ("number-text", "b.jsonl: line 2: 'text' is a number, not a text"),
    ("list-text", "b.jsonl: line 1: 'text' is a list, not a text"),
    ("surrogate", "b.jsonl: line 2: 'text' is not valid Unicode text: a lone surrogate"),
    ("parquet-int-text", "a.parquet: column 'text' holds int64, not texts"),
])
def test_bad_input_fails_before_ray_starts(model_dir, tmp_path, case, message):
    src = tmp_path / "in"
    src.mkdir()
    if case in ("broken-jsonl", "number-text", "list-text", "surrogate"):
        (src / "a.jsonl").write_text('{"id": "1", "text": "good"}\n')
        bad = {"broken-jsonl": '{"id": "2", "text": "bad"}\n\n{"id": "3", "text": "broken\n{"id": "4"}\n',
               "number-text": '{"id": "2", "text": "bad"}\n{"id": "3", "text": 7}\n',
               "list-text": '{"id": "2", "text": ["bad"]}\n',
               "surrogate": '{"id": "2", "text": "bad"}\n{"id": "3", "text": "x\\ud800"}\n'}[case]
        (src / "b.jsonl").write_text(bad)
    elif case == "parquet-int-text":
        import pandas as pd

        pd.DataFrame({"id": ["1"], "text": [5]}).to_parquet(src / "a.parquet")
    if case == "mixed-columns":
        write_csv(src / "a.csv", ["id", "text"], [("1", "good")])
        write_csv(src / "b.csv", ["id", "text", "extra"], [("2", "bad", "x")])
    elif case == "mixed-types":
        write_csv(src / "a.csv", ["id", "text"], [("1", "good")])
        (src / "b.jsonl").write_text('{"id": "2", "text": "bad"}\n')
    elif case == "no-text":
        write_csv(src / "a.csv", ["id", "body"], [("1", "good")])
    path = tmp_path / "nope" if case == "missing" else src
    with pytest.raises(GeepError, match=message):
        ray_data.run_job(path, tmp_path / "out", model_dir)
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_threads_0_is_refused_under_ray_too(model_dir, inputs, tmp_path, capsys):
    """Without --ray, --threads 0 is an error; with it, too (it was quietly run at 1 thread)."""
    rc = main(["predict", "--ray", "--model", str(model_dir), "--input", str(inputs), "--output",
               str(tmp_path / "out"), "--threads", "0"])
    assert rc == 2 and capsys.readouterr().err.strip() == "error: --threads must be at least 1, got 0"
    assert not ray.is_initialized()


def test_missing_extra_is_one_line(model_dir, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "geep.integrations.ray_data", None)  # as if Ray were not installed
    rc = main(["predict", "--ray", "--model", str(model_dir), "--input", str(inputs), "--output",
               str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --ray needs Ray Data: pip install 'geep[ray]'"]


# ---- jobs on a local Ray
@pytest.fixture(scope="module")
def local_ray():
    ray_data.start_local_ray(3)
    yield
    ray.shutdown()


def test_the_workers_of_a_local_ray_run_at_the_driver_s_priority(local_ray):
    """Ray's default niceness 15 starved the actors on a busy machine (the suite 'hung' under load)."""
    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=TIMEOUT_S) == os.nice(0)


@pytest.mark.parametrize("policy, knob, precision", [("full", None, "fp32"), ("fastbert", 0.5, "fp32"),
                                                     ("geep-verify", 0.4, "int8")])
def test_same_answers_as_single_process_and_the_manifest_counts_every_actor_that_ran(
        local_ray, model_dir, inputs, tmp_path, policy, knob, precision):
    """Ray promises each row is labelled once, not how it spreads blocks over the actors (under load one actor can
    take them all), so the manifest is checked for what is promised: its rows per actor, one entry per actor that
    ran (one or two of the two), add up to the rows."""
    manifest = ray_data.run_job(inputs, tmp_path / "out", model_dir, policy=policy, knob=knob, concurrency=2,
                                map_batch_size=4, precision=precision)
    rows, written = ray_data.read_output(tmp_path / "out")
    assert written == manifest and manifest["rows_in"] == manifest["rows_out"] == N_FILES * ROWS
    shares = manifest["rows_per_actor"]
    assert 1 <= len(shares) <= 2 and manifest["actors"] == len(shares) and all(n > 0 for n in shares.values())
    assert sum(shares.values()) == N_FILES * ROWS
    assert sorted(rows["id"]) == sorted(f"{f}{i:03d}" for f in range(N_FILES) for i in range(ROWS))
    assert manifest["precision"] == precision
    expected = single_process(model_dir, inputs, tmp_path, policy, knob, precision)
    for row in rows.to_dict("records"):
        want = expected[row["id"]]
        assert (row["prediction"], row["exit_layer"]) == (want["prediction"], want["exit_layer"]), row["id"]
        assert row["probability"] == pytest.approx(want["probability"], abs=1e-5)
    if policy != "full":
        assert rows["exit_layer"].nunique() >= 2  # the knob makes rows leave at different exits


def test_the_job_reads_its_input_once(local_ray, model_dir, inputs, tmp_path, monkeypatch):
    """The rows' count and the labelling share one read (a count on the lazy dataset read every file twice)."""
    log = tmp_path / "reads"
    read_input = ray_data.read_input

    def counted(files, encoding=None):
        def note(batch):  # a nested function: Ray ships it by value
            with open(log, "a") as f:
                f.write(f"{len(batch)}\n")
            return batch

        return read_input(files, encoding).map_batches(note, batch_format="pandas")

    monkeypatch.setattr(ray_data, "read_input", counted)
    manifest = ray_data.run_job(inputs, tmp_path / "out", model_dir, concurrency=1)
    assert manifest["rows_in"] == N_FILES * ROWS
    assert sum(map(int, log.read_text().split())) == N_FILES * ROWS  # each row passed the reader once


@pytest.fixture(scope="module")
def stats_dir(model_dir, tmp_path_factory):
    """The model with fitted trust-score sets and calibrated exit temperatures (read by ``confidence``)."""
    from geep.evaluation.fit_means import fit_trust_sets
    from geep.modeling import MultiExitClassifier

    model = MultiExitClassifier.from_pretrained(model_dir)
    texts = random_texts(30, seed=4)
    with torch.inference_mode():
        sets, settings = fit_trust_sets(model, model.tokenize(texts), torch.tensor([i % 3 for i in range(30)]),
                                        per_class=5)
    model.set_trust_sets(sets, {**settings, "source": "random"})
    model.config.temperatures = {"fp32": [2.0, 2.0, 2.0, 1.0]}
    directory = tmp_path_factory.mktemp("ray-stats") / "model"
    model.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("policy", ["trust-score", "confidence"])
def test_trust_score_and_calibrated_confidence_label_as_single_process(local_ray, stats_dir, inputs, tmp_path,
                                                                       policy):
    from geep.inference import all_exit_logits
    from geep.inference.spec import resolve_run
    from geep.modeling import MultiExitClassifier

    model = MultiExitClassifier.from_pretrained(stats_dir)
    texts = [t for path in sorted(inputs.iterdir()) for t in path.read_text().splitlines()[1:]]
    spec = resolve_run(model, policy)
    out = all_exit_logits(model, random_texts(N_FILES * ROWS, seed=3), batch_size=16).logits
    knob = round(float(spec.policy.confidence_at(1, out[:, 0]).median()), 4)
    ray_data.run_job(inputs, tmp_path / "out", stats_dir, policy=policy, knob=knob, concurrency=1, map_batch_size=4)
    rows, _ = ray_data.read_output(tmp_path / "out")
    expected = single_process(stats_dir, inputs, tmp_path, policy, knob)
    assert len(rows) == len(texts) == N_FILES * ROWS
    for row in rows.to_dict("records"):
        want = expected[row["id"]]
        assert (row["prediction"], row["exit_layer"]) == (want["prediction"], want["exit_layer"]), row["id"]
    assert rows["exit_layer"].nunique() >= 2  # the knob makes rows leave at different exits


def test_two_actors_each_answer_their_own_half(local_ray, model_dir, inputs, tmp_path):
    """Both actors of a two-actor job work, shown the way Ray guarantees: two RayPredictor actors, each called
    directly on half of the rows, answer as single-process predict and say which actor they are."""
    import pandas as pd

    frame = pd.concat([pd.read_csv(p, dtype=str) for p in sorted(inputs.iterdir())], ignore_index=True)
    halves = [frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2:]]
    actor_class = ray.remote(num_cpus=1)(ray_data.RayPredictor)
    actors = [actor_class.remote(str(model_dir), policy="fastbert", knob=0.5, id_column="id", text_column="text",
                                 with_actor=True) for _ in halves]
    answers = ray.get([actor.__call__.remote(half) for actor, half in zip(actors, halves)], timeout=TIMEOUT_S)
    for actor in actors:
        ray.kill(actor)
    expected = single_process(model_dir, inputs, tmp_path, "fastbert", 0.5)
    assert len({a[ray_data.ACTOR_COLUMN].iloc[0] for a in answers}) == 2  # two actors, one per half
    for half, answer in zip(halves, answers):
        assert answer["id"].tolist() == half["id"].tolist()  # in the batch's order
        for row in answer.to_dict("records"):
            want = expected[row["id"]]
            assert (row["prediction"], row["exit_layer"]) == (want["prediction"], want["exit_layer"]), row["id"]


def test_empty_texts_are_answered_and_the_output_has_the_usual_mode(local_ray, model_dir, tmp_path):
    """Empty texts under --ray follow the one rule (README): answered, as geep.predict answers ""; and the output
    directory has the mode a new directory gets (mkdtemp's 0700 stayed on it)."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text('{"id": "1", "text": ""}\n{"id": "2", "text": null}\n{"id": "3", "text": "  "}\n'
                                 '{"id": "4", "text": "good film"}\n')
    ray_data.run_job(src, tmp_path / "out", model_dir, policy="fastbert", knob=0.5, concurrency=1)
    rows, _ = ray_data.read_output(tmp_path / "out")
    from geep.modeling import MultiExitClassifier

    model = MultiExitClassifier.from_pretrained(model_dir)
    expected = geep.predict(model, ["", "", "", "good film"], policy="fastbert", knob=0.5)
    got = rows.sort_values("id")
    assert got["prediction"].tolist() == expected.labels
    assert got["exit_layer"].tolist() == expected.exit_layer.tolist()
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_task_s_own_error_ends_the_command_with_its_own_line(local_ray, model_dir, inputs, tmp_path, capsys,
                                                               monkeypatch):
    """What no check before the job can see, raised inside an actor, ends `geep predict --ray` with exit 2 and the
    task's own message as its error line (not a traceback of Ray's wrappers), and nothing is written."""
    import functools

    class Refuses(ray_data.RayPredictor):  # defined here, so Ray ships it by value
        def __call__(self, batch):
            raise GeepError("row 3 says no")

    monkeypatch.setattr(ray_data, "run_job", functools.partial(ray_data.run_job, predictor=Refuses))
    rc = main(["predict", "--ray", "--model", str(model_dir), "--input", str(inputs), "--output",
               str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == "error: the Ray job failed, nothing was written: row 3 says no"
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_an_actor_killed_mid_job_loses_and_repeats_no_row(local_ray, model_dir, inputs, tmp_path):
    marker = tmp_path / "killed-once"

    class DiesOnce(ray_data.RayPredictor):  # defined here, so Ray ships it by value
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the actor's process dies mid-job, once
            return super().__call__(batch)

    manifest = ray_data.run_job(inputs, tmp_path / "out", model_dir, policy="fastbert", knob=0.5, concurrency=2,
                                map_batch_size=4, predictor=DiesOnce)
    rows, _ = ray_data.read_output(tmp_path / "out")
    assert marker.exists()
    assert len(rows) == rows["id"].nunique() == N_FILES * ROWS == manifest["rows_out"]


def test_overwrite_replaces_only_on_success_and_leaves_no_old_shards(local_ray, model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", "--ray", "--model", str(model_dir), "--input", str(inputs), "--output", str(out),
            "--concurrency", "2", "--map-batch-size", "8", "--output-format", "jsonl"]
    assert main(argv) == 0
    first = sorted(p.name for p in out.iterdir())
    assert main(argv) == 2
    assert "is not empty; choose another directory or pass --overwrite" in capsys.readouterr().err
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    write_csv(smaller / "only.csv", ["id", "text"], [("x1", "good film"), ("x2", "bad plot")])
    argv[argv.index(str(inputs))] = str(smaller)
    assert main(argv + ["--overwrite"]) == 0
    rows, manifest = ray_data.read_output(out)
    assert sorted(rows["id"]) == ["x1", "x2"] and manifest["rows_out"] == 2
    assert not any(name in first for name in (p.name for p in out.iterdir() if p.name != "_manifest.json"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary directory left


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    """A cascade of a 1-layer and a 3-layer tiny model, its threshold mid-range."""
    from geep.modeling.cascade import Cascade
    from tests.helpers import tiny_member

    directory = tmp_path_factory.mktemp("ray-cascade")
    texts = random_texts(40, seed=1)
    tiny_member(directory / "small", 1, [1], seed=0, texts=texts)
    tiny_member(directory / "large", 3, [1, 2, 3], seed=1, texts=texts)
    Cascade.from_members([directory / "small", directory / "large"]).save_pretrained(directory / "c")
    return directory / "c"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_cascade_labels_a_corpus_as_single_process_predict(local_ray, cascade_dir, inputs, tmp_path, precision):
    manifest = ray_data.run_job(inputs, tmp_path / "out", cascade_dir, policy="cascade", knob=0.6, concurrency=1,
                                map_batch_size=4, precision=precision)
    rows, _ = ray_data.read_output(tmp_path / "out")
    assert manifest["rows_out"] == N_FILES * ROWS
    expected = single_process(cascade_dir, inputs, tmp_path, "cascade", 0.6, precision)
    for row in rows.to_dict("records"):
        want = expected[row["id"]]
        assert (row["prediction"], row["exit_layer"], row["exit_member"]) == (
            want["prediction"], want["exit_layer"], want["exit_member"]), row["id"]
        assert row["probability"] == pytest.approx(want["probability"], abs=1e-5)
    assert set(rows["exit_member"]) == {1, 2}
