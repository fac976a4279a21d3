"""The bench at several precisions: full at fp32, full at int8 and every policy at int8, in the same rounds."""

import pytest
import torch

from geep.bench import bench, format_summary, render_report
from geep.bench.plots import plot_curves
from geep.errors import GeepError
from tests.bench.test_runner import LABELS, TEXTS, tiny_model

POLICIES = ["full", "fastbert", "pabee", "geep-verify"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    torch.set_num_threads(1)
    model = tiny_model(tmp_path_factory.mktemp("tok"))
    return bench({"tiny": model}, TEXTS, LABELS, batch_sizes=[8], policies=POLICIES, grid_points=4,
                 timed_points=2, repeats=5, precisions=["fp32", "int8"], data_spec="hand-made")


def test_every_point_at_every_precision(result):
    assert result.header["precisions"] == ["fp32", "int8"]
    by = {(r["precision"], r["policy"]) for r in result.records}
    assert by == {(p, policy) for p in ("fp32", "int8") for policy in POLICIES}
    full = {r["precision"]: r for r in result.records if r["policy"] == "full"}
    assert full["fp32"]["wall_speedup"] == full["fp32"]["wall_speedup_fp32"] == 1.0
    assert full["int8"]["wall_speedup"] == 1.0  # over full at its own precision
    assert full["int8"]["wall_speedup_fp32"] == pytest.approx(full["fp32"]["wall_seconds"] /
                                                             full["int8"]["wall_seconds"])
    for r in result.records:
        if r["timed"]:
            own = full[r["precision"]]["wall_seconds"] / r["wall_seconds"]
            assert r["wall_speedup"] == pytest.approx(1.0 if r["policy"] == "full" else own)
        else:
            assert r["wall_speedup_fp32"] is None
    accuracy = result.header["models"]["tiny"]["full_accuracy_by_precision"]
    assert set(accuracy) == {"fp32", "int8"} and abs(accuracy["fp32"] - accuracy["int8"]) <= 0.1


def test_int8_points_replay_int8_logits(result):
    """FLOPs do not depend on the precision; int8's exits come from its own all-exits pass."""
    fp32 = [r for r in result.records if r["precision"] == "fp32"]
    int8 = [r for r in result.records if r["precision"] == "int8"]
    assert [(r["policy"], r["knob"]) for r in fp32] == [(r["policy"], r["knob"]) for r in int8]
    full = [r for r in result.records if r["policy"] == "full"]
    assert full[0]["flops_speedup"] == full[1]["flops_speedup"] == 1.0


def test_report_and_curves_show_both(result, tmp_path):
    report = render_report(result)
    assert "precisions fp32, int8, timed in the same rounds" in report
    assert "| precision | policy | knob | accuracy | vs full fp32 (points) |" in report
    assert "| int8 | full | - |" in report and "| fp32 | full | - |" in report
    assert "- `fastbert` at int8:" in report
    summary = format_summary(result)
    assert "FLOPs frontier within 1 point(s) of full at fp32" in summary and " int8 " in summary
    plot_curves(result, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_precision_the_device_cannot_run(tmp_path):
    model = tiny_model(tmp_path)
    with pytest.raises(GeepError, match="fp16 runs on cuda, not cpu"):
        bench({"tiny": model}, TEXTS[:4], LABELS[:4], policies=["full"], repeats=5, precisions=["fp32", "fp16"])


def test_class_means_is_benched_at_both_precisions_only_where_fitted(tmp_path):
    from geep.evaluation.fit_means import fit_class_means

    torch.set_num_threads(1)
    plain = tiny_model(tmp_path / "a", table=False)
    fitted = tiny_model(tmp_path / "b", table=False)
    ids = torch.tensor([fitted.label_names.index(y) for y in LABELS])
    with torch.inference_mode():
        fitted.set_class_means(fit_class_means(fitted, fitted.tokenize(TEXTS), ids), rows=len(ids), source="hand")
    result = bench({"plain": plain, "fitted": fitted}, TEXTS, LABELS, batch_sizes=[8],
                   policies=["full", "class-means"], grid_points=4, timed_points=1, repeats=5,
                   precisions=["fp32", "int8"], data_spec="hand-made")
    by = {(r["model"], r["precision"], r["policy"]) for r in result.records}
    assert {(m, p, "class-means") for m in ("fitted",) for p in ("fp32", "int8")} <= by
    assert not any(m == "plain" and policy == "class-means" for m, _, policy in by)
