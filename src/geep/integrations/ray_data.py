"""Bulk inference on Ray Data: label a corpus of files with actors that each load the model once.

Ray Data's batch-inference pattern: ``Dataset.map_batches`` with a callable class, so every actor loads the model
once and labels the batches it is given. Each actor runs the same scheduler as offline ``geep predict`` on each
batch it gets (``map_batch_size`` rows, sorted and bucketed by the scheduler), so a row's label and exit layer are
those single-process ``geep predict`` gives it (a row's outputs do not depend on its batch-mates).

- :class:`RayPredictor`: the callable class, usable in any user's own ``map_batches`` pipeline.
- :func:`predict_dataset`: ``ds -> ds`` with predict's fields (``id``, then the model's task's: a classifier's
  ``prediction``, ``probability``, ``probabilities``; a multi-label model's ``prediction`` (a list) and
  ``probabilities``; a regression model's ``prediction`` (the score); then ``exit_layer``).
- :func:`run_job`: what ``geep predict --ray`` does: check the input before any actor starts, read a file or a
  directory of CSV/TSV/JSONL/parquet files (every CSV column as a string), label, write parquet or JSONL shards into a
  temporary sibling directory, write ``_manifest.json`` last, then rename it into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import ray
import ray.data

from geep.data.token_data import get_token_columns, make_windows
from geep.errors import GeepError
from geep.inference.outputs import PredictionOutput, prediction_fields
from geep.inference.rows import prepare, sentence_answers
from geep.inference.runs import run_spec
from geep.inference.spec import resolve_run
from geep.integrations.ray_input import InputFiles, scan_input
from geep.io import check_output_dir, default_dir_mode
from geep.modeling.cascade import Cascade, load_model

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
OUTPUT_FORMATS = ("parquet", "jsonl")
ACTOR_COLUMN = "__geep_actor"  # each output row's actor, counted for the manifest, never written


class RayPredictor:
    """A callable class for ``Dataset.map_batches``: loads a saved geep model once per actor and labels batches.

    ``__call__`` takes a pandas batch holding ``text_column`` (and ``text_pair_column``, ``id_column`` where given)
    and returns predict's fields for its rows, in the batch's order. ``knob`` None takes the model's calibrated knob
    for the policy; ``threads`` sets torch's CPU threads in the actor.
    """

    def __init__(self, model_dir: str | os.PathLike, *, policy: str = "full", knob: Any = None,
                 precision: str = "fp32", batch_size: int = 32, text_column: str | None = None,
                 text_pair_column: str | None = None, id_column: str | None = None, threads: int | None = None,
                 with_actor: bool = False) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else None
        self.model = load_model(model_dir, device=device)
        config = self.model.config
        self.spec = resolve_run(self.model, policy, knob, precision=precision, batch_size=batch_size)  # once per actor
        if self.spec.policy.needs_labels:
            raise GeepError(f"--ray does not run the {self.spec.policy.name} policy: it reads the true labels")
        self.text_column = text_column or config.text_column
        self.text_pair_column = text_pair_column or config.text_pair_column
        self.id_column = id_column
        self.with_actor = with_actor
        self.actor = ray.get_runtime_context().get_actor_id() or f"pid-{os.getpid()}"

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(self.model, Cascade) and self.model.config.task == "token-classification":
            return self._sentences(batch)
        texts = [_text(v) for v in batch[self.text_column]]
        pairs = None if self.text_pair_column is None else [_text(v) for v in batch[self.text_pair_column]]
        run = run_spec(self.model, self.spec, prepare(self.model, self.spec, texts, pairs))
        task = self.model.task
        cascade = isinstance(self.model, Cascade)
        out = PredictionOutput.from_run(task, run, self.model.exit_members(run.exit_layer) if cascade else None)
        ids = None if self.id_column is None else [_id(v) for v in batch[self.id_column]]
        frame = pd.DataFrame(out.rows(task, ids), columns=(["id"] if ids is not None else [])
                             + list(prediction_fields(task)) + (["exit_member"] if cascade else []))
        if self.with_actor:
            frame[ACTOR_COLUMN] = self.actor
        return frame


    def _sentences(self, batch: pd.DataFrame) -> pd.DataFrame:
        """A token classifier's rows: each sentence's words cut into windows, answered per sentence as `geep
        predict` writes them (``rows.sentence_answers``)."""
        words = []
        for i, value in enumerate(batch[self.text_column]):
            if isinstance(value, str) or not hasattr(value, "__len__") or not len(value):
                raise GeepError(f"row {i + 1} of a batch: column '{self.text_column}' is not a non-empty list of words")
            words.append([str(w) for w in value])
        data = get_token_columns(datasets.Dataset.from_dict({"tokens": words}), "tokens", None, source="a Ray batch",
                                 require_tags=False)
        windows = make_windows(self.model.tokenizer, data, self.model.max_length)
        run = run_spec(self.model, self.spec, prepare(self.model, self.spec, windows.texts))
        rows = sentence_answers(self.model.task, windows, data.sentences, run.predictions, run.exit_layer)
        ids = None if self.id_column is None else [_id(v) for v in batch[self.id_column]]
        fields = ["tokens", "tags", "entities", "exit_layers", "exit_layer"]
        frame = pd.DataFrame([({} if ids is None else {"id": ids[i]}) | row for i, row in enumerate(rows)],
                             columns=(["id"] if ids is not None else []) + fields)
        frame["entities"] = [json.dumps(e, ensure_ascii=False) for e in frame["entities"]]  # one JSON text per row
        if self.with_actor:
            frame[ACTOR_COLUMN] = self.actor
        return frame


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # null, or a pandas NaN
        return ""
    return value if isinstance(value, str) else str(value)


def _id(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars -> Python


def predict_dataset(ds: ray.data.Dataset, model_dir: str | os.PathLike, *, concurrency: int = 1,
                    num_cpus: float | None = None, num_gpus: float = 0, map_batch_size: int = 1024,
                    predictor: type = RayPredictor, **predictor_kwargs: Any) -> ray.data.Dataset:
    """``ds`` labelled by ``concurrency`` :class:`RayPredictor` actors (each ``num_cpus`` CPUs, default its torch
    threads or 1, and ``num_gpus`` GPUs), ``map_batch_size`` rows per batch; ``predictor_kwargs`` go to
    :class:`RayPredictor` (policy, knob, precision, batch_size, columns, threads); ``predictor``: a subclass."""
    if concurrency < 1:
        raise GeepError(f"--concurrency must be at least 1, got {concurrency}")
    if num_cpus is None:
        num_cpus = float(predictor_kwargs.get("threads") or 1)
    return ds.map_batches(predictor, fn_constructor_args=(str(model_dir),), fn_constructor_kwargs=predictor_kwargs,
                          batch_size=map_batch_size, batch_format="pandas", concurrency=concurrency,
                          num_cpus=num_cpus, num_gpus=num_gpus)


def read_input(files: InputFiles, encoding: str | None = None) -> ray.data.Dataset:
    """The rows of the scanned input files as a Ray dataset; every CSV/TSV column is read as a string."""
    paths = [str(p) for p in files.paths]
    if files.kind in (".csv", ".tsv"):
        read_options = pa_csv.ReadOptions(encoding=encoding or "utf8", block_size=1 << 26)
        parse = pa_csv.ParseOptions(delimiter="\t" if files.kind == ".tsv" else ",", newlines_in_values=True)
        convert = pa_csv.ConvertOptions(column_types={name: pa.string() for name in files.columns},
                                        strings_can_be_null=False)
        return ray.data.read_csv(paths, read_options=read_options, parse_options=parse, convert_options=convert)
    if files.kind in (".json", ".jsonl"):
        return ray.data.read_json(paths, lines=True)
    return ray.data.read_parquet(paths)


def run_job(input_path: str | os.PathLike, output: str | os.PathLike, model_dir: str | os.PathLike, *,
            policy: str = "full", knob: Any = None, precision: str = "fp32", batch_size: int = 32,
            text_column: str | None = None, text_pair_column: str | None = None, id_column: str | None = None,
            encoding: str | None = None, concurrency: int = 1, threads: int = 1, num_gpus: float = 0,
            map_batch_size: int = 1024, output_format: str = "parquet", overwrite: bool = False,
            address: str | None = None, predictor: type = RayPredictor) -> dict[str, Any]:
    """``geep predict --ray``: label every row of ``input_path`` (a file or a directory of files) into the
    directory ``output``; returns the manifest (also written, last, as ``output/_manifest.json``).

    Everything the user can get wrong (input, columns, model, policy, knob, output) is checked before Ray starts.
    ``address`` (default: ``RAY_ADDRESS``) names a running cluster; without one a local Ray is started for the job
    with enough logical CPUs that the actors leave one for reading. The job writes into a temporary sibling of
    ``output`` and renames it into place on success, so a failed job leaves nothing that looks complete and
    ``overwrite`` replaces an earlier output only then. ``predictor`` is the callable class (a subclass for tests).
    """
    started = time.perf_counter()
    if output_format not in OUTPUT_FORMATS:
        raise GeepError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    for name, value in (("--concurrency", concurrency), ("--threads", threads), ("--batch-size", batch_size),
                        ("--map-batch-size", map_batch_size)):
        if value < 1:
            raise GeepError(f"{name} must be at least 1, got {value}")
    if num_gpus < 0:
        raise GeepError(f"--num-gpus must be >= 0, got {num_gpus}")
    model = load_model(model_dir)  # checks the directory and the run, in the driver
    spec = resolve_run(model, policy, knob, precision=precision, batch_size=batch_size,
                       device_type="cuda" if num_gpus > 0 else "cpu")
    if spec.policy.needs_labels:
        raise GeepError(f"--ray does not run the {spec.policy.name} policy: it reads the true labels (use geep bench)")
    config = model.config
    text_column = text_column or config.text_column
    text_pair_column = text_pair_column or config.text_pair_column
    token = not isinstance(model, Cascade) and config.task == "token-classification"  # words: lists, not texts
    files = scan_input(input_path, [c for c in (text_column, text_pair_column, id_column) if c], encoding=encoding,
                       texts=[] if token else [c for c in (text_column, text_pair_column) if c])
    if id_column is None and "id" in files.columns:
        id_column = "id"
    del model
    output = Path(output)
    _check_output(output, Path(input_path), Path(model_dir), overwrite)

    address = address or os.environ.get("RAY_ADDRESS") or None
    local = address is None and not ray.is_initialized()
    if local:
        start_local_ray(max(os.cpu_count() or 1, concurrency * threads + 1))
    elif not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    os.chmod(tmp, default_dir_mode())  # mkdtemp's 0700 would stay on the output it is renamed to
    try:
        ds = read_input(files, encoding).materialize()  # read once: the count below comes from its blocks' metadata
        rows_in = ds.count()
        labelled = predict_dataset(
            ds, model_dir, concurrency=concurrency, num_cpus=float(threads), num_gpus=num_gpus,
            map_batch_size=map_batch_size, predictor=predictor, policy=spec.policy.name, knob=spec.knob, precision=precision, batch_size=batch_size,
            text_column=text_column, text_pair_column=text_pair_column, id_column=id_column, threads=threads,
            with_actor=True).materialize()
        shares = {row[ACTOR_COLUMN]: int(row["count()"]) for row in labelled.groupby(ACTOR_COLUMN).count().take_all()}
        written = labelled.drop_columns([ACTOR_COLUMN])
        shards = tmp / "shards"
        if output_format == "parquet":
            written.write_parquet(str(shards))
        else:
            written.write_json(str(shards))
        for shard in shards.iterdir():  # the shards sit at the top of the output directory
            shard.rename(tmp / shard.name)
        shards.rmdir()
        manifest = {
            "rows_in": rows_in, "rows_out": sum(shares.values()),
            "rows_per_actor": dict(sorted(shares.items())), "actors": len(shares),
            "input": str(input_path), "files": [str(p) for p in files.paths], "model": str(model_dir),
            "policy": spec.policy.name, "knob": spec.knob_values, "precision": precision, "batch_size": batch_size,
            "map_batch_size": map_batch_size, "concurrency": concurrency, "threads_per_actor": threads,
            "num_gpus_per_actor": num_gpus, "output_format": output_format,
            "ray_address": address or "local", "seconds": round(time.perf_counter() - started, 3),
        }
        if manifest["rows_out"] != rows_in:
            raise GeepError(f"the job labelled {manifest['rows_out']} rows of {rows_in}; nothing was written")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, output)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if local:
            ray.shutdown()


def start_local_ray(num_cpus: int) -> None:
    """A local Ray for one job, its workers at the driver's own priority.

    Ray starts its workers at niceness 15 (``RAY_worker_niceness``) so that they yield to everything else on the
    machine; on a busy machine (a build, a training run, two CPU-bound processes on two cores) the actors then get a
    few percent of a core and take many minutes to import torch and load the model, and the job looks hung (it did, in
    this project's own test suite). The user asked for this job: its actors run at niceness 0, as Ray's own job
    manager sets for the jobs it starts. A cluster given by ``--ray-address`` keeps its own settings.
    """
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _system_config={"worker_niceness": 0})


def _check_output(output: Path, input_path: Path, model_dir: Path, overwrite: bool) -> None:
    """The output directory, checked before any work by the rule every command's output follows
    (``geep.io.check_output_dir``); its parent must exist, since the job writes a temporary sibling there."""
    check_output_dir(output, overwrite=overwrite, inputs=(input_path,), models=(model_dir,))
    if not output.parent.is_dir():
        raise GeepError(f"the directory of --output {output} does not exist")


def _replace(tmp: Path, output: Path) -> None:
    """Renames the finished ``tmp`` onto ``output``; an earlier output goes only once the new one is in place."""
    old = None
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        old.rmdir()
        output.rename(old)
    tmp.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_output(directory: str | os.PathLike) -> tuple[pd.DataFrame, Mapping[str, Any]]:
    """The rows and the manifest of a finished ``--ray`` output directory (small outputs; for checks and tests)."""
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    shards = sorted(p for p in directory.iterdir() if p.name != MANIFEST)
    if manifest["output_format"] == "parquet":
        frames = [pd.read_parquet(p) for p in shards]
    else:
        frames = [pd.read_json(p, lines=True, dtype={"id": str}) for p in shards]
    return pd.concat(frames, ignore_index=True), manifest
