import json
import math

import pytest
import torch
from transformers import BertModel

from tests.helpers import tiny_bert_config, tiny_tokenizer
from geep.bench import (RECORD_FIELDS, BenchResult, bench, check_policies, check_settings, format_summary,
                        frontier_knobs, load_result, parse_batch_sizes, render_report, summary_rows,
                        write_outputs)
from geep.bench.runner import exits_early
from geep.bench.timing import time_interleaved
from geep.errors import GeepError
from geep.evaluation import build_table, interpolated_throughput, pareto_frontier
from geep.exit_table import exit_distribution, layers_from_distribution
from geep.inference import all_exit_logits, label_ids, predict
from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier
from geep.policies import VerifyKnob
from tests.helpers import make_decisive, random_texts

N = 40
TEXTS = random_texts(N, seed=5)
LABELS = [f"c{i % 3}" for i in range(N)]
BATCH_SIZES = (4, 16)
GRID, TIMED, REPEATS = 5, 3, 5
POLICIES = ["full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "oracle"]


def tiny_model(directory, objective="geep", table=True, seed=0):
    torch.manual_seed(seed)
    config = GeepConfig(num_layers=4, label_names=["c0", "c1", "c2"], exit_layers=[1, 2, 4], objective=objective)
    model = MultiExitClassifier(BertModel(tiny_bert_config(4)), config, tiny_tokenizer(directory)).eval()
    make_decisive(model, TEXTS)
    if table:
        build_table(model, random_texts(60, seed=8), build_threshold=0.5, min_count=1)
    return model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def result(model):
    torch.set_num_threads(1)
    return bench({"tiny": model}, TEXTS, LABELS, batch_sizes=BATCH_SIZES, policies=POLICIES, grid_points=GRID,
                 timed_points=TIMED, repeats=REPEATS, data_spec="hand-made")


def records_of(result, policy, batch_size):
    return [r for r in result.records if r["policy"] == policy and r["batch_size"] == batch_size]


# --------------------------------------------------------------------------------------------- records
def test_record_schema(result):
    assert result.records
    for r in result.records:
        assert tuple(r) == RECORD_FIELDS
        assert r["model"] == "tiny" and r["objective"] == "geep" and r["device"] == result.header["device"]
        assert r["batch_size"] in BATCH_SIZES and r["policy"] in POLICIES
        assert r["knob"] is None or isinstance(r["knob"], (int, float))
        assert isinstance(r["continue_threshold"], float) if r["policy"] == "geep-verify" else \
            r["continue_threshold"] is None  # geep-verify's knob is (tau, t): knob = tau
        for key in ("accuracy", "macro_f1"):
            assert isinstance(r[key], float) and 0.0 <= r[key] <= 1.0
        assert 1.0 <= r["mean_exit_layer"] <= 4.0 and r["flops_speedup"] > 0
        assert set(r["exit_histogram"]) == {"1", "2", "4"} and sum(r["exit_histogram"].values()) == N
        assert isinstance(r["timed"], bool) and r["reporting_only"] == (r["policy"] == "oracle")
        for key in ("wall_speedup", "samples_per_s", "wall_seconds", "wall_runs"):
            if not r["timed"]:
                assert r[key] is None
            elif key == "wall_runs":
                assert len(r[key]) == REPEATS and all(t > 0 for t in r[key])
                assert r["wall_seconds"] == sorted(r[key])[2]  # the median of 5
            else:
                assert isinstance(r[key], float) and r[key] > 0 and math.isfinite(r[key])
        json.dumps(r)  # JSON-ready as it is


# The grids of GRID = 5 points for C = 3 labels and |E| = 3 exits, written out by hand from README's knob table.
QUARTERS = [0.0, 0.25, 0.5, 0.75, 1.0]
GRIDS = {"full": [None], "oracle": [None], "fastbert": QUARTERS, "confidence": QUARTERS, "geep": QUARTERS,
         "deebert": [math.log(3) * q for q in QUARTERS], "pabee": [0, 1, 2],
         "geep-verify": [VerifyKnob(tau, t) for tau in QUARTERS[:-1] for t in QUARTERS] + [VerifyKnob(1.0, 0.0)]}


def test_a_record_per_grid_point_per_policy_per_batch_size(result):
    for batch_size in BATCH_SIZES:
        for policy in POLICIES:
            got = [(r["knob"], r["continue_threshold"]) for r in records_of(result, policy, batch_size)]
            want = [tuple(k) if isinstance(k, VerifyKnob) else (k, None) for k in GRIDS[policy]]
            assert len(got) == len(want) and all(g == pytest.approx(w) if w[0] is not None else g == w
                                                 for g, w in zip(got, want)), policy
    assert len(result.records) == len(BATCH_SIZES) * sum(len(grid) for grid in GRIDS.values())


def test_full_is_timed_with_speedup_exactly_one(result):
    for batch_size in BATCH_SIZES:
        (full,) = records_of(result, "full", batch_size)
        assert full["timed"] and full["wall_speedup"] == 1.0 and full["flops_speedup"] == 1.0
        assert full["samples_per_s"] == pytest.approx(N / full["wall_seconds"])


# ------------------------------------------------------------------- plain references, written here, for the bench
def reference_frontier(points):
    """Indices of the points no other point beats (at least as fast and as accurate, better in one; of exact ties
    the first), by brute force, slowest first."""
    def beats(q, j, p, i):
        better = q["flops_speedup"] >= p["flops_speedup"] and q["accuracy"] >= p["accuracy"]
        equal = q["flops_speedup"] == p["flops_speedup"] and q["accuracy"] == p["accuracy"]
        return better and (not equal or j < i)
    on = [i for i, p in points if not any(beats(q, j, p, i) for j, q in points if j != i)]
    return sorted(on, key=lambda i: dict(points)[i]["flops_speedup"])


def reference_timed(records, floor, n):
    """What the bench promises to time of one policy's records (README, "Benchmarking"): on the FLOPs frontier of
    the knobs at which some row exits early, the fastest point within the budget (else the most accurate), its
    neighbours, then one point toward the fast end; a frontier of at most n points whole. Written for n <= 3."""
    assert n <= 3
    last = max(int(k) for k in records[0]["exit_histogram"])
    timeable = [(i, r) for i, r in enumerate(records) if r["policy"] == "full" or
                any(count and int(layer) < last for layer, count in r["exit_histogram"].items())]
    frontier = reference_frontier(timeable)
    if len(frontier) <= n:
        return sorted(frontier)
    within = [j for j, i in enumerate(frontier) if records[i]["accuracy"] >= floor - 1e-12]
    anchor = within[-1] if within else 0
    chosen = [j for j in (anchor, anchor - 1, anchor + 1) if 0 <= j < len(frontier)][:n]
    if len(chosen) < n:
        chosen.append(max(j for j in range(len(frontier)) if j not in chosen))  # the free point nearest the fast end
    return sorted(frontier[j] for j in chosen)


def test_timed_points_lie_on_the_frontier_around_the_budget_but_never_at_full_s_work(result):
    """Each policy's timed knobs are the ones the README promises (a reference written above, not the bench's own
    frontier code); full's wall speed-up is the ratio of the medians."""
    for batch_size in BATCH_SIZES:
        full = records_of(result, "full", batch_size)[0]
        for policy in POLICIES:
            records = records_of(result, policy, batch_size)
            timed = [i for i, r in enumerate(records) if r["timed"]]
            assert timed == reference_timed(records, full["accuracy"] - 0.01, TIMED), (policy, batch_size)
            assert 1 <= len(timed) <= TIMED
            for r in records:
                if r["timed"] and r["policy"] != "full":
                    assert r["wall_speedup"] == pytest.approx(full["wall_seconds"] / r["wall_seconds"])


H, I, C, WIDTH, L, E = 32, 37, 3, 128, 4, [1, 2, 4]  # the tiny model: hidden, intermediate, labels, head width


def layer_cost(T):
    """README: an encoder layer on one row padded to T: 2T(4H^2 + 2HI) + 4T^2 H."""
    return 2 * T * (4 * H * H + 2 * H * I) + 4 * T * T * H


def head_cost(T):
    """An attention exit head (width w, first-token pooling: one query) on one row padded to T, by its matrix
    products: projection 2THw, query 2w^2, key and value 4Tw^2, scores and weighted values 4Tw, output 2w^2,
    dense 2w^2, classifier 2wC."""
    w = WIDTH
    return 2 * T * H * w + 2 * w * w + 4 * T * w * w + 4 * T * w + 2 * w * w + 2 * w * w + 2 * w * C


def chunks(rows, size):
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def shrink_cost(lengths, exits, b, reads_exits=True):
    """FLOPs of length-sorted batches of b that run exit by exit, shrinking as rows leave, each step padded to the
    longest row still in it (``full`` reads only the last exit's head)."""
    total = 0
    for batch in chunks(sorted(range(len(lengths)), key=lambda i: lengths[i]), b):
        alive, done = batch, 0
        for k in (E if reads_exits else [L]):
            T = max(lengths[i] for i in alive)
            total += len(alive) * ((k - done) * layer_cost(T) + head_cost(T))
            alive, done = [i for i in alive if exits[i] > k], k
            if not alive:
                break
    return total


def pooled_cost(lengths, exits, predicted, b):
    """FLOPs of sorted buckets with pooled continuation: rows wait in pools by (layers run, target exit); the pool
    with the nearest target (then the deepest) runs next, in length-sorted batches of b, each to its target, whose
    head it reads; rows that go on join the pool of the next exit."""
    pools, total = {}, 0
    for i, k in enumerate(predicted):
        pools.setdefault((0, k), []).append(i)
    while pools:
        target = min(t for _, t in pools)
        done = max(d for d, t in pools if t == target)
        for batch in chunks(sorted(pools.pop((done, target)), key=lambda i: lengths[i]), b):
            T = max(lengths[i] for i in batch)
            total += len(batch) * ((target - done) * layer_cost(T) + head_cost(T))
            for i in batch:
                if exits[i] > target:
                    pools.setdefault((target, E[E.index(target) + 1]), []).append(i)
    return total


def reference_exits(policy, knob, logits, y, predicted=None):
    """Each row's exit layer under the policy's rule (README's table) on every exit's logits (N, |E|, C)."""
    logp = torch.log_softmax(logits.double(), -1)
    ent = -(logp.exp() * logp).sum(-1)  # (N, |E|)
    top = logp.exp().max(-1).values
    labels = logits.argmax(-1)
    exits = []
    for n in range(len(y)):
        def leaves(j):
            if policy in ("fastbert", "geep-verify"):
                t = knob if policy == "fastbert" else knob.continue_threshold
                return t >= 1 or (t > 0 and ent[n, j] / math.log(C) <= t)
            if policy == "deebert":
                return knob >= math.log(C) - 1e-12 or (knob > 0 and ent[n, j] <= knob)
            if policy == "confidence":
                return knob <= 0 or (knob < 1 and top[n, j] >= knob)
            if policy == "pabee":  # the label unchanged for `knob` exits after the first
                return j >= knob and all(labels[n, j - d] == labels[n, j] for d in range(1, knob + 1))
            if policy == "oracle":
                return labels[n, j] == y[n]
            return policy == "geep"  # geep leaves at its predicted layer; full never early
        first = 0 if predicted is None else E.index(predicted[n])
        exits.append(next((E[j] for j in range(first, len(E) - 1) if leaves(j)), L))
    return exits


def test_accuracy_exits_and_flops_match_a_plain_reference(model, result):
    """Every record's accuracy, exit histogram, mean exit layer and FLOPs speed-up, from the policies' rules and
    the schedules' FLOPs written out above, on the same recorded logits the bench replays."""
    y = label_ids(model, LABELS).tolist()
    encoded = model.tokenize(TEXTS)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    logits = all_exit_logits(model, encoded, batch_size=max(BATCH_SIZES)).logits  # (N, |E|, C)
    q = exit_distribution(model.exit_table, encoded, model.pad_token_id)
    for batch_size in BATCH_SIZES:
        full_cost = shrink_cost(lengths, [L] * N, batch_size, reads_exits=False)
        for policy in POLICIES:
            for r, knob in zip(records_of(result, policy, batch_size), GRIDS[policy]):
                predicted = None
                if policy in ("geep", "geep-verify"):
                    tau = knob if policy == "geep" else knob.tau
                    predicted = layers_from_distribution(q, tau, E).tolist()
                exits = reference_exits(policy, knob, logits, y, predicted)
                answers = [int(logits[n, E.index(k)].argmax()) for n, k in enumerate(exits)]
                where = (policy, knob, batch_size)
                assert r["accuracy"] == pytest.approx(sum(a == t for a, t in zip(answers, y)) / N, abs=1e-12), where
                assert r["exit_histogram"] == {str(k): exits.count(k) for k in E}, where
                assert r["mean_exit_layer"] == pytest.approx(sum(exits) / N), where
                cost = (shrink_cost(lengths, exits, batch_size, reads_exits=policy != "full") if predicted is None
                        else pooled_cost(lengths, exits, predicted, batch_size))
                assert r["flops_speedup"] == pytest.approx(full_cost / cost, rel=1e-12), where
    # FLOPs depend on the batch size, accuracy does not
    small, large = (records_of(result, "fastbert", b) for b in BATCH_SIZES)
    assert [r["accuracy"] for r in small] == [r["accuracy"] for r in large]


def test_full_accuracy_is_the_models_predict_accuracy(model, result):
    predicted = predict(model, TEXTS, policy="full").labels
    accuracy = sum(p == t for p, t in zip(predicted, LABELS)) / N
    for batch_size in BATCH_SIZES:
        assert records_of(result, "full", batch_size)[0]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert result.header["models"]["tiny"]["full_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_header(result):
    h = result.header
    assert set(h["versions"]) == {"python", "torch", "transformers", "geep"}
    assert h["git_commit"] is None or len(h["git_commit"]) == 40
    assert h["n"] == N and h["data"] == "hand-made" and len(h["data_sha256"]) == 64
    assert h["device"] == "cpu (1 thread)" and h["repeats"] == REPEATS and h["batch_sizes"] == list(BATCH_SIZES)
    m = h["models"]["tiny"]
    assert m["objective"] == "geep" and m["exit_layers"] == [1, 2, 4] and m["exit_table"] is True
    assert m["tokenize_seconds"] > 0 and m["skipped_policies"] == []
    ece = m["calibration_error"]["fp32"]  # no temperatures fitted: the raw softmax only
    assert ece["exits"] == [1, 2, 4] and ece["temperatures"] is None and ece["after"] is None
    assert len(ece["before"]) == 3 and all(0.0 <= e <= 1.0 for e in ece["before"])


def test_outputs_written_and_read_back(result, tmp_path):
    paths = write_outputs(result, tmp_path / "out")
    assert load_result(paths["json"]).to_dict() == json.loads(json.dumps(result.to_dict()))
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = paths["report"].read_text()
    for policy in POLICIES:
        assert f"| {policy}" in report
    assert "## `tiny` (geep), batch size 16" in report and "Pareto" in report
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "curves.png", "report.md"]
    summary = format_summary(result)
    assert "geep-verify" in summary and "FLOPs frontier within 1 point(s) of full" in summary
    assert "median of 5 interleaved runs" in summary and "±" in summary
    assert "Fastest within 1 point(s) of `full`" in report and "* timed" in report
    assert "| model | exit | T | ECE raw | ECE calibrated |" in report and "| `tiny` | 4 | - |" in report


def test_table_policies_are_skipped_without_a_table(tmp_path, caplog):
    plain = tiny_model(tmp_path, objective="fastbert", table=False)
    with caplog.at_level("INFO", logger="geep.bench"):
        out = bench({"plain": plain}, TEXTS[:12], LABELS[:12], batch_sizes=[8], policies=["geep", "geep-verify"],
                    grid_points=3, timed_points=2, repeats=5)
    assert {r["policy"] for r in out.records} == {"full"}  # full is always benched
    assert out.header["models"]["plain"]["skipped_policies"] == ["geep", "geep-verify"]
    assert "no exit table, skipping geep, geep-verify" in caplog.text
    assert render_report(out)  # a report with single-point policies only


def test_bad_input(model):
    with pytest.raises(GeepError, match="never seen|not one of the model's labels"):
        bench({"tiny": model}, TEXTS[:3], ["c0", "c1", "zz"], policies=["full"], repeats=5)
    with pytest.raises(GeepError, match="2 labels for 3 texts"):
        bench({"tiny": model}, TEXTS[:3], ["c0", "c1"], policies=["full"], repeats=5)
    with pytest.raises(GeepError, match="unknown policy 'nope'"):
        check_policies(["fastbert", "nope"])
    with pytest.raises(GeepError, match="--repeats must be at least 5"):
        check_settings(batch_sizes=[1], grid_points=5, timed_points=2, repeats=4, warmup=1)
    with pytest.raises(GeepError, match="--timed-points must be at least 1"):
        check_settings(batch_sizes=[1], grid_points=5, timed_points=0, repeats=5, warmup=1)
    with pytest.raises(GeepError, match="--accuracy-budget must be in"):
        check_settings(batch_sizes=[1], grid_points=5, timed_points=1, repeats=5, warmup=1, accuracy_budget=-1)
    for text in ("0", "a,2", "", "4,-1"):
        with pytest.raises(GeepError, match="--batch-sizes"):
            parse_batch_sizes(text)
    assert parse_batch_sizes("1, 32,1") == [1, 32]
    assert check_policies(["oracle", "fastbert", "oracle"]) == ["full", "oracle", "fastbert"]


# ---------------------------------------------------------------------------------------------- timing
def test_time_interleaved_warms_up_then_round_robins():
    calls = []
    runs = [lambda i=i: calls.append(i) or f"out{i}" for i in range(3)]
    outputs, seconds = time_interleaved(runs, repeats=4, warmup=2)
    assert outputs == ["out0", "out1", "out2"]
    assert calls[:6] == [0, 1, 2, 0, 1, 2]  # warm-up rounds
    assert calls[6:] == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]  # round r starts at point r mod P
    assert [len(s) for s in seconds] == [4, 4, 4] and all(t >= 0 for s in seconds for t in s)


def test_exits_early():
    assert exits_early({1: 0, 2: 3, 4: 0}, 4) and exits_early({1: 1, 4: 9}, 4)
    assert not exits_early({1: 0, 2: 0, 4: 12}, 4) and not exits_early({4: 5}, 4)


def test_frontier_knobs_time_the_budget_point_its_neighbours_then_the_rest():
    """Hand-made grid (accuracy, FLOPs speed-up); its frontier is points 0, 2, 3, 5, 6, 7 (1 and 4 dominated)."""
    grid = [{"accuracy": a, "flops_speedup": x} for a, x in
            [(0.905, 1.0), (0.88, 1.1), (0.90, 1.5), (0.895, 2.0), (0.85, 2.0), (0.885, 3.0), (0.87, 4.0),
             (0.80, 6.0)]]
    floor = 0.89  # full 0.90, budget 1 point: the budget point is 3 (0.895 at 2x)
    assert frontier_knobs(grid, 1, floor) == [3]
    assert frontier_knobs(grid, 2, floor) == [2, 3]  # then the more accurate neighbour
    assert frontier_knobs(grid, 3, floor) == [2, 3, 5]  # then the faster one
    assert frontier_knobs(grid, 4, floor) == [2, 3, 5, 7]  # one more: the fast end
    assert frontier_knobs(grid, 5, floor) == [0, 2, 3, 5, 7]  # two more: both ends
    assert frontier_knobs(grid, 9, floor) == [0, 2, 3, 5, 6, 7]  # the whole frontier, never a dominated point
    assert frontier_knobs(grid, 3, 0.95) == [0, 2, 7]  # nothing within the budget: from the most accurate
    # 3 cannot be timed (no row exits early): the frontier of the rest has 2 as its budget point
    assert frontier_knobs(grid, 3, floor, keep=lambda i: i != 3) == [0, 2, 5]
    assert frontier_knobs([{"accuracy": 0.5, "flops_speedup": 1.0}], 5, 0.9) == [0]


# -------------------------------------------------------------------------------------------- frontiers
def rec(speed, accuracy, policy="geep", **kw):
    return {"model": "m", "policy": policy, "batch_size": 32, "samples_per_s": speed, "accuracy": accuracy, **kw}


def test_pareto_frontier():
    a, b, c = rec(100, 0.90), rec(200, 0.85), rec(400, 0.80)
    dominated = [rec(150, 0.84), rec(90, 0.90), rec(400, 0.70), rec(50, 0.5)]
    ignored = [rec(None, 0.99), rec(999, None), rec(float("nan"), 0.99)]
    frontier = pareto_frontier([dominated[0], c, *ignored, a, dominated[1], b, dominated[2], dominated[3]],
                               "samples_per_s", "accuracy")
    assert frontier == [a, b, c]  # sorted by x ascending
    first, second = rec(100, 0.9, tag=1), rec(100, 0.9, tag=2)
    assert pareto_frontier([first, second], "samples_per_s", "accuracy") == [first]  # exact tie: the first kept
    assert pareto_frontier([], "samples_per_s", "accuracy") == []

    class P:  # objects work too (e.g. KnobPoint)
        def __init__(self, x, y):
            self.x, self.y = x, y

    p, q = P(1, 2), P(2, 1)
    assert pareto_frontier([q, P(0.5, 1.5), p], "x", "y") == [p, q]


def test_interpolated_throughput():
    points = [rec(100, 0.90), rec(200, 0.85), rec(400, 0.80), rec(150, 0.84), rec(None, 0.95)]  # 0.95 untimed
    assert interpolated_throughput(points, 0.90) == 100  # exactly a frontier point
    assert interpolated_throughput(points, 0.875) == pytest.approx(150)  # half way from (100, .90) to (200, .85)
    assert interpolated_throughput(points, 0.85) == 200
    assert interpolated_throughput(points, 0.84) == pytest.approx(240)  # a fifth of the way to (400, .80)
    assert interpolated_throughput(points, 0.80) == 400
    assert interpolated_throughput(points, 0.10) == 400  # the fastest point already reaches it
    assert interpolated_throughput(points, 0.91) is None  # above every timed point
    assert interpolated_throughput([rec(None, 0.9)], 0.5) is None  # nothing timed
    # ties: equal accuracy -> the faster counts; equal speed -> the more accurate
    assert interpolated_throughput([rec(100, 0.9), rec(300, 0.9), rec(300, 0.7)], 0.9) == 300
    assert interpolated_throughput([rec(10, 0.9), rec(20, 0.8)], 0.85, speed="samples_per_s") == pytest.approx(15)
    with pytest.raises(ValueError, match="one \\(model, policy, batch size\\)"):
        interpolated_throughput([rec(100, 0.9), rec(200, 0.8, policy="fastbert")], 0.85)


def test_report_of_a_hand_made_result():
    records = []
    for policy, knob, acc, flops, wall in [("full", None, 0.9, 1.0, 1.0), ("fastbert", 0.0, 0.9, 0.8, 0.85),
                                           ("fastbert", 0.5, 0.88, 2.0, None), ("fastbert", 1.0, 0.7, 4.0, 3.0),
                                           ("oracle", None, 0.99, 3.0, 2.5)]:
        records.append({"model": "m", "objective": "geep", "policy": policy, "knob": knob, "batch_size": 32,
                        "accuracy": acc, "macro_f1": acc, "mean_exit_layer": 2.0, "exit_histogram": {"1": 1},
                        "flops_speedup": flops, "wall_speedup": wall, "samples_per_s": None if wall is None else
                        100 * wall, "wall_seconds": None if wall is None else 1 / wall,
                        "wall_runs": None if wall is None else [0.95 / wall, 1 / wall, 1.15 / wall], "timed": wall is not None,
                        "reporting_only": policy == "oracle", "device": "cpu (2 threads)"})
    header = {"n": 100, "data": "x", "data_sha256": "0" * 64, "device": "cpu (2 threads)", "batch_sizes": [32],
              "repeats": 3, "warmup": 1, "versions": {}, "git_commit": None,
              "models": {"m": {"objective": "geep", "exit_layers": [1, 2], "full_accuracy": 0.9,
                               "full_macro_f1": 0.9, "tokenize_seconds": 0.01, "tokenize_samples_per_s": 1e4,
                               "skipped_policies": []}}}
    report = render_report(BenchResult(header, records))
    assert "| fastbert | 0.5 |" not in report  # untimed: not in the table
    assert "| fastbert | 1 | 70.00% | 70.00 | 2.00 | 4.00x | 3.00x | 300 | 0.75 | ±10% |" in report
    assert "| oracle (reads labels) |" in report
    assert "- `fastbert` wall: 0 (90.0%, 0.85x), 1 (70.0%, 3.00x)" in report
    assert "FLOPs (3 of 3 grid points; * timed): 0* (90.0%, 0.80x), 0.5 (88.0%, 2.00x), 1* (70.0%, 4.00x)" in report


def test_the_summary_reads_the_fastest_within_the_budget_off_the_frontier():
    """Not the fastest timed point by wall (noise can rank those either way) but the FLOPs frontier's fastest point
    within the budget, which the bench always times; geep-verify's knob shows as tau/t."""
    def record(policy, knob, t, acc, flops, wall, histogram=None):
        runs = None if wall is None else [0.9 / wall, 1 / wall, 1 / wall, 1 / wall, 1.1 / wall]
        return {"model": "m", "objective": "geep", "policy": policy, "knob": knob, "continue_threshold": t,
                "batch_size": 32, "accuracy": acc, "macro_f1": acc, "mean_exit_layer": 2.0,
                "exit_histogram": histogram or {"1": 5, "6": 5}, "flops_speedup": flops, "wall_speedup": wall,
                "samples_per_s": None if wall is None else 100 * wall, "wall_seconds": None if wall is None else
                1 / wall, "wall_runs": runs, "timed": wall is not None, "reporting_only": False, "device": "cpu",
                "precision": "fp32", "wall_speedup_fp32": wall}
    records = [record("full", None, None, 0.90, 1.0, 1.0, {"1": 0, "6": 10}),
               record("geep-verify", 0.0, 0.0, 0.90, 0.9, None, {"1": 0, "6": 10}),  # no early exit: not timed
               record("geep-verify", 0.0, 0.3, 0.895, 2.0, 2.6),  # faster by wall, but not the frontier's budget point
               record("geep-verify", 0.2, 0.3, 0.893, 2.3, 2.5),
               record("geep-verify", 0.4, 0.3, 0.85, 3.0, 3.0),
               record("geep-verify", 0.6, 0.3, 0.84, 2.9, None)]  # dominated
    header = {"n": 10, "data": "x", "data_sha256": "0" * 64, "device": "cpu", "batch_sizes": [32], "repeats": 5,
              "warmup": 1, "versions": {}, "git_commit": None, "grid_points": 5, "timed_points": 3,
              "accuracy_budget": 1.0,
              "models": {"m": {"objective": "geep", "exit_layers": [1, 6], "full_accuracy": 0.9, "full_macro_f1": 0.9,
                               "tokenize_seconds": 0.01, "tokenize_samples_per_s": 1e3, "skipped_policies": []}}}
    result = BenchResult(header, records)
    rows = {row["policy"]: row["best"] for row in summary_rows(result)}
    assert rows["geep-verify"] is records[3] and rows["full"] is records[0]
    assert summary_rows(result, 0.5)[1]["best"] is records[2] and summary_rows(result, 0.2)[1]["best"] is None
    summary = format_summary(result)
    assert "geep-verify       0.2/0.3    89.30%   2.50x   ±10%   2.30x" in summary
    report = render_report(result, curves=None)
    assert "| fp32 | geep-verify | 0.2/0.3 | 89.30% | 2.30x | 2.50x | ±10% |" in report
    assert "0/0.3* (89.5%, 2.00x), 0.2/0.3* (89.3%, 2.30x), 0.4/0.3* (85.0%, 3.00x)" in report
