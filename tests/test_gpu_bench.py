"""`benchmarks/gpu.sh` runs end to end: its CPU path on a tiny pack, without `datasets` (the GPU machine has none)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from transformers import BertModel

from tests.helpers import run_in_group, synthetic, tiny_bert_config, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def make_pack(directory: Path) -> Path:
    """What benchmarks/gpu_pack.py writes, with a tiny random encoder (fp16 weights) and synthetic rows."""
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).half().save_pretrained(directory / "minilm")
    tiny_tokenizer(directory / "minilm").save_pretrained(directory / "minilm")
    for name, seed in (("bbc", 0), ("tweets", 1)):
        with open(directory / f"{name}.jsonl", "w") as f:
            for split, n in (("train", 60), ("dev", 24), ("test", 24)):
                for text, label in zip(*synthetic(n, seed=seed + n)):
                    f.write(json.dumps({"split": split, "text": text, "label": label}) + "\n")
    return directory


def test_gpu_script_runs_on_the_cpu_without_datasets(tmp_path):
    pack = make_pack(tmp_path / "pack")
    blocker = tmp_path / "block" / "datasets"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('datasets is not on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block"), "PYTHON": str(Path(os.sys.executable)),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    # Its own process group, killed whole when it ends or after 540 s (below pytest-timeout's 600 s).
    done = run_in_group(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--pack", str(pack), "--output", str(out),
                         "--device", "cpu", "--precisions", "fp32,bf16", "--batch-sizes", "4,8", "--epochs", "1",
                         "--repeats", "3", "--grid-points", "5"], env=env, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["header"]["device"].startswith("cpu") and set(result["header"]["data"]) == {"bbc", "tweets"}
    points = {(r["data"], r["batch_size"], r["precision"], r["point"]) for r in result["records"]}
    assert len(points) == 2 * 2 * 2 * 5
    for r in result["records"]:
        assert r["wall_speedup"] > 0 and r["flops_speedup"] > 0 and 0 <= r["label_flips"] <= 1
        if r["point"] == "full":
            assert r["flops_speedup"] == 1.0
    assert "fastbert re-batched" in (out / "gpu.md").read_text()


def test_gpu_script_without_a_pack_is_one_line(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--pack", str(tmp_path / "none"),
                           "--output", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": os.sys.executable}, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: no pack at")
    assert "Traceback" not in done.stderr
