import math

import pytest
import torch

from geep.errors import GeepError
from geep.policies import POLICIES, VerifyKnob, entropy, get_policy, select_memory
from geep.tasks import OutputLayout
from tests.helpers import replay_exits

C, E = 3, 4  # classes, exits

# Rows of logits that push each rule to its edge: a one-hot softmax (entropy exactly 0, max p exactly 1), a
# uniform one (normalised entropy 1 up to rounding, max p = 1/C), and ordinary ones.
EDGE = torch.tensor([[1000.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.5, -1.0], [0.3, 0.2, 0.1]])


def every_exit(rows: torch.Tensor) -> torch.Tensor:
    """The same logits at every exit: (N, C) -> (N, E, C)."""
    return rows[:, None].expand(-1, E, -1).clone()


def test_registry():
    assert list(POLICIES) == ["full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "oracle",
                              "lte", "elbert", "vote", "margin", "class-means", "trust-score", "ponder", "hashee",
                              "sentee"]
    assert get_policy("pabee") is POLICIES["pabee"]
    with pytest.raises(GeepError, match="unknown policy 'x'; choose one of: full, fastbert, deebert"):
        get_policy("x")


def test_entropy_from_log_softmax_has_no_nan():
    h = entropy(EDGE)
    assert torch.isfinite(h).all()
    assert h[0] == 0.0  # p = (1, 0, 0) exactly
    assert h[1] == pytest.approx(math.log(3), abs=1e-6)


@pytest.mark.parametrize("name", ["fastbert", "deebert", "confidence", "pabee"])
def test_knob_ends_are_exact(name):
    """``never``: every row reaches the last exit, even a one-hot one; ``first``: every row leaves at exit 0,
    even a uniform one."""
    policy = POLICIES[name]
    spec = policy.knob_spec(C, E)
    logits = every_exit(EDGE)
    assert replay_exits(policy, logits, spec.never).tolist() == [E - 1] * len(EDGE)
    assert replay_exits(policy, logits, spec.first).tolist() == [0] * len(EDGE)
    for knob in (spec.never, spec.first):  # the online decision agrees at the first exit
        leave, _ = policy.decide(EDGE, policy.resolve_knob(knob, C, E), policy.start(len(EDGE), torch.device("cpu")))
        assert leave.tolist() == [knob == spec.first] * len(EDGE)


def test_documented_ends():
    ends = {name: (POLICIES[name].knob_spec(C, E).never, POLICIES[name].knob_spec(C, E).first)
            for name in ("fastbert", "deebert", "confidence", "pabee")}
    assert ends == {"fastbert": (0.0, 1.0), "deebert": (0.0, math.log(C)), "confidence": (1.0, 0.0),
                    "pabee": (E - 1, 0)}
    assert POLICIES["full"].knob_spec(C, E) is None and POLICIES["oracle"].knob_spec(C, E) is None
    for name in ("geep", "geep-verify"):  # tau: 1 predicts L for every row, 0 the first exit
        spec = POLICIES[name].knob_spec(C, E)
        assert (spec.never, spec.first, spec.low, spec.high) == (1.0, 0.0, 0.0, 1.0)


def test_thresholds_between_the_ends():
    logits = every_exit(EDGE)
    norm = entropy(EDGE) / math.log(C)  # (N,)
    t = float(norm[2] + norm[3]) / 2  # row 2 is confident enough, row 3 not
    assert norm[2] < t < norm[3]
    assert replay_exits("fastbert", logits, t).tolist() == [0, E - 1, 0, E - 1]
    assert replay_exits("deebert", logits, t * math.log(C)).tolist() == [0, E - 1, 0, E - 1]
    top = EDGE.softmax(-1).max(-1).values
    assert replay_exits("confidence", logits, float(top[2]) - 1e-3).tolist() == [0, E - 1, 0, E - 1]


def test_pabee_counts_consecutive_agreements():
    # predicted labels per exit: row 0: 0 0 1 1 (E = 4); row 1: 2 2 2 2; row 2: 0 1 0 1
    preds = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 0, 1]])
    logits = torch.nn.functional.one_hot(preds, C).float() * 5  # (N, E, C)
    pabee = POLICIES["pabee"]
    assert replay_exits(pabee, logits, 0).tolist() == [0, 0, 0]
    assert replay_exits(pabee, logits, 1).tolist() == [1, 1, 3]  # 2 agreeing exits
    assert replay_exits(pabee, logits, 2).tolist() == [3, 2, 3]  # 3 agreeing exits; row 0's run restarts at exit 2
    assert replay_exits(pabee, logits, 3).tolist() == [3, 3, 3]


def test_pabee_memory_follows_its_rows():
    pabee = POLICIES["pabee"]
    memory = pabee.start(3, torch.device("cpu"))
    _, memory = pabee.decide(torch.eye(3) * 5, 1, memory)  # labels 0, 1, 2
    memory = select_memory(memory, torch.tensor([2, 0]))  # row 1 leaves
    leave, memory = pabee.decide(torch.eye(3)[[2, 1]] * 5, 1, memory)  # row 2 agrees again, row 0 changes
    assert leave.tolist() == [True, False] and memory["agreed"].tolist() == [1, 0]


def test_oracle_picks_the_earliest_correct_exit():
    preds = torch.tensor([[1, 0, 0, 2], [2, 2, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    logits = torch.nn.functional.one_hot(preds, C).float()
    labels = torch.tensor([0, 1, 0, 2])
    assert replay_exits("oracle", logits, None, labels).tolist() == [1, 2, 0, 3]  # row 3: never right -> L
    with pytest.raises(GeepError, match="needs the true labels"):
        replay_exits("oracle", logits, None)


def test_full_never_exits_early():
    assert replay_exits("full", every_exit(EDGE), None).tolist() == [E - 1] * len(EDGE)


@pytest.mark.parametrize("name, knob, message", [
    ("fastbert", 1.5, r"fastbert threshold must be a number in \[0, 1\], got 1.5"),
    ("fastbert", -0.1, r"in \[0, 1\]"),
    ("fastbert", float("nan"), r"in \[0, 1\]"),
    ("deebert", 1.2, r"deebert threshold must be a number in \[0, 1.098612\], got 1.2"),
    ("confidence", 2, r"in \[0, 1\]"),
    ("pabee", 4, r"pabee threshold must be an integer in \[0, 3\], got 4"),
    ("pabee", 1.5, r"an integer in \[0, 3\]"),
    ("full", 0.5, "the full policy takes no threshold"),
    ("oracle", 1, "the oracle policy takes no threshold"),
])
def test_knob_out_of_range(name, knob, message):
    with pytest.raises(GeepError, match=message):
        POLICIES[name].resolve_knob(knob, C, E)


def resolved(policy, knob):
    """The knob a policy runs with (geep-verify's tau; its continuation threshold is the table's S = 0.3)."""
    value = policy.resolve_knob(knob, C, E, build_threshold=0.3)
    return value.tau if isinstance(value, VerifyKnob) else value


def test_knob_defaults_and_grids_span_the_range():
    for name, policy in POLICIES.items():
        spec = policy.knob_spec(C, E)
        grid = policy.grid(C, E, steps=11)
        if spec is None:
            assert policy.resolve_knob(None, C, E) is None and grid == [None]
            continue
        assert spec.low <= resolved(policy, None) <= spec.high
        assert all(policy.resolve_knob(k, C, E, build_threshold=0.3) == k for k in grid)  # every one is valid
        grid = [k.tau if isinstance(k, VerifyKnob) else k for k in grid]  # geep-verify: (tau, t) pairs
        assert grid[0] == spec.low and grid[-1] == spec.high
        assert {spec.never, spec.first} <= set(grid)
    assert POLICIES["pabee"].grid(C, E) == [0, 1, 2, 3]
    assert POLICIES["pabee"].resolve_knob(2.0, C, E) == 2
    assert POLICIES["deebert"].resolve_knob(1.0986123, C, E) == math.log(3)  # a rounded ln C means ln C


def test_decide_returns_a_tensor_mask_for_the_batch():
    outputs = torch.cat([EDGE, torch.tensor([[3.0], [-3.0], [0.0], [1.0]])], -1)  # an exit module's signal after
    for name, policy in POLICIES.items():
        task = policy.tasks[0]
        layout, out = OutputLayout(task, C, 1, E), outputs
        if task == "token-classification":  # one position: C - 1 tag logits and the real-token flag
            layout = OutputLayout(task, C, 1, E, classes=C - 1)
        if policy.needs_class_means:  # C class-means distances (in [0, 2]) after the signal
            layout, out = OutputLayout(task, C, 1 + C, E, distances=C), torch.cat([outputs, EDGE.abs() / 500], -1)
        if policy.needs_trust_score:  # C trust-score distances after the signal
            layout, out = OutputLayout(task, C, 1 + C, E, trust=C), torch.cat([outputs, EDGE.abs() / 500], -1)
        bound = policy.bind(layout)
        knob = bound.resolve_knob(None, C, E, build_threshold=0.3)
        labels = torch.zeros((len(EDGE), C) if task == "multi-label" else (len(EDGE),))
        leave, memory = bound.decide(out, knob, bound.start(len(EDGE), torch.device("cpu"), labels))
        assert isinstance(leave, torch.Tensor) and leave.dtype == torch.bool and leave.shape == (len(EDGE),), name
        assert all(v.shape[0] == len(EDGE) for v in memory.values())


def test_geep_verify_needs_the_table_s_and_continues_under_the_fastbert_rule():
    verify = POLICIES["geep-verify"]
    with pytest.raises(GeepError, match="no exit table"):
        verify.resolve_knob(0.5, C, E)
    knob = verify.resolve_knob(0.5, C, E, build_threshold=0.4)
    assert knob == VerifyKnob(0.5, 0.4) and verify.resolve_knob(knob, C, E, build_threshold=0.4) == knob
    leave, _ = verify.decide(EDGE, knob, {})
    assert torch.equal(leave, POLICIES["fastbert"].decide(EDGE, 0.4, {})[0])
    assert POLICIES["geep"].decide(EDGE, 0.5, {})[0].all()  # geep's rows leave where they were predicted to
    q = torch.tensor([[0.5, 0.1, 0.1, 0.3], [0.0, 0.0, 0.2, 0.8]], dtype=torch.float64)
    assert verify.predict_layers(q, knob, [1, 2, 3, 4]).tolist() == [1, 4]
    assert POLICIES["geep"].predict_layers(q, 0.0, [2, 4]).tolist() == [2, 2]
    with pytest.raises(TypeError, match="does not predict exit layers"):
        POLICIES["fastbert"].predict_layers(q, 0.5, [1, 2, 3, 4])


def test_geep_verify_grid_is_tau_by_every_fastbert_threshold():
    """(0, t) for every fastbert t (so geep-verify's frontier contains FastBERT's), a coarser tau, and one point
    at tau = 1, where every row runs to L whatever t."""
    verify, fastbert = POLICIES["geep-verify"], POLICIES["fastbert"]
    for steps in (5, 21, 41):
        grid = verify.grid(C, E, steps)
        ts = fastbert.grid(C, E, steps)
        taus = sorted({k.tau for k in grid})
        assert taus[0] == 0.0 and taus[-1] == 1.0 and len(taus) == min(steps, 11)
        assert [k.continue_threshold for k in grid if k.tau == 0.0] == ts
        assert [k for k in grid if k.tau == 1.0] == [VerifyKnob(1.0, 0.0)]
        assert len(grid) == len(set(grid)) == (len(taus) - 1) * len(ts) + 1


def test_geep_verify_fills_what_the_caller_leaves_out():
    """A number is tau; what is not given comes from the calibrated values, else tau 0.5 and t = S."""
    verify = POLICIES["geep-verify"]
    both = {"tau": 0.4, "continue_threshold": 0.2}

    def run_with(knob, stored):
        return verify.resolve_knob(verify.fill_knob(knob, stored), C, E, build_threshold=0.3)

    assert run_with(None, both) == VerifyKnob(0.4, 0.2)
    assert run_with(0.7, both) == VerifyKnob(0.7, 0.2)  # tau given, t calibrated
    assert run_with({"continue_threshold": 0.6}, both) == VerifyKnob(0.4, 0.6)
    assert run_with(VerifyKnob(None, 0.6), both) == VerifyKnob(0.4, 0.6)
    assert run_with((0.1, 0.9), both) == VerifyKnob(0.1, 0.9)
    assert run_with(None, {"tau": 0.4}) == VerifyKnob(0.4, 0.3)  # calibrated before t was a knob: t = S
    assert run_with(0.7, None) == VerifyKnob(0.7, 0.3)
    assert run_with({"continue_threshold": 0.6}, None) == VerifyKnob(0.5, 0.6)
    assert run_with(None, None) == VerifyKnob(0.5, 0.3)
    assert verify.knob_from_values(verify.knob_values(VerifyKnob(0.4, 0.2))) == VerifyKnob(0.4, 0.2)
    with pytest.raises(GeepError, match=r"geep-verify continue threshold must be a number in \[0, 1\], got 1.5"):
        run_with({"continue_threshold": 1.5}, None)
    with pytest.raises(GeepError, match="has no knob 'threshold'; its knobs: tau, continue_threshold"):
        run_with({"threshold": 0.5}, None)
    with pytest.raises(GeepError, match=r"\(tau, continue_threshold\)"):
        run_with((0.1, 0.2, 0.3), None)
    with pytest.raises(GeepError, match="the fastbert policy has no knob 'continue_threshold'"):
        POLICIES["fastbert"].fill_knob({"continue_threshold": 0.5}, None)
    with pytest.raises(GeepError, match="the full policy takes no threshold"):
        POLICIES["full"].fill_knob({"threshold": 0.5}, None)
    assert POLICIES["fastbert"].fill_knob({"threshold": 0.5}, {"threshold": 0.2}) == 0.5
    assert POLICIES["fastbert"].fill_knob(None, {"threshold": 0.2}) == 0.2
