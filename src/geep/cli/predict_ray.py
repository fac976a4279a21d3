"""`geep predict --ray`: the same labels, on Ray Data (``geep.integrations.ray_data``), into a directory of shards.

Needs the `ray` extra (`pip install 'geep[ray]'`); without it `--ray` is a one-line error naming the extra.
"""

from __future__ import annotations

import argparse
import json
import logging

from geep.errors import GeepError

logger = logging.getLogger(__name__)

MISSING = "--ray needs Ray Data: pip install 'geep[ray]'"


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `geep predict --ray`."""
    group = p.add_argument_group("Ray Data (--ray; `pip install 'geep[ray]'`)")
    group.add_argument("--ray", action="store_true",
                       help="label on Ray Data: --input a file or a directory of CSV/TSV/JSONL/parquet files, "
                       "--output a directory of shards plus _manifest.json")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="a running Ray cluster (default: $RAY_ADDRESS, else a local Ray for the job)")
    group.add_argument("--concurrency", type=int, default=1, metavar="N", help="actors, each loading the model once")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch CPU threads (with --ray: per actor, default 1; without: default torch's own)")
    group.add_argument("--num-gpus", type=float, default=0, metavar="G", help="GPUs per actor (default 0)")
    group.add_argument("--map-batch-size", type=int, default=1024, metavar="N",
                       help="rows per Ray batch, which the scheduler sorts and buckets (default 1024)")
    group.add_argument("--output-format", choices=["parquet", "jsonl"], default="parquet",
                       help="format of the output shards (default parquet)")


def run_ray(args: argparse.Namespace) -> int:
    """Runs the job and prints its manifest's summary."""
    try:
        from geep.integrations.ray_data import run_job
    except ImportError as e:
        if "ray" in str(e).lower():
            raise GeepError(MISSING) from None
        raise
    from geep.cli.columns import pair_column
    from geep.cli.info import read_model_info
    from geep.inference.inputs import GivenKnob

    pair = pair_column(args.text_pair_column, read_model_info(args.model)[0], args.model)
    knob = GivenKnob(args.threshold, args.continue_threshold, args.cascade_threshold)  # resolved once, with the policy, by the job
    import ray.data
    import ray.exceptions

    # A task's own exception, not Ray Data's UserCodeException around it (whose cause does not reach the driver).
    ray.data.DataContext.get_current().raise_original_map_exception = True
    try:  # the input is checked before the job starts; this catches what only a task could find
        manifest = run_job(
            args.input, args.output, args.model, policy=args.policy, knob=knob, precision=args.precision,
            batch_size=args.batch_size, text_column=args.text_column, text_pair_column=pair,
            id_column=args.id_column, encoding=args.encoding, concurrency=args.concurrency,
            threads=1 if args.threads is None else args.threads, num_gpus=args.num_gpus,
            map_batch_size=args.map_batch_size, output_format=args.output_format, overwrite=args.overwrite,
            address=args.ray_address)
    except ray.exceptions.RayError as e:
        raise GeepError(f"the Ray job failed, nothing was written: {ray_failure(e)}") from None
    return _summary(args, manifest)


def ray_failure(error: BaseException) -> str:
    """One line for an exception Ray raised for a failed task: the task's own exception, found through Ray's
    wrappers (RayTaskError, Ray Data's UserCodeException): a GeepError's message, else its type and first line."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    own = next((e for e in chain if isinstance(e, GeepError) and not isinstance(e, ray_errors())), None)
    if own is not None:
        return (str(own).strip().splitlines() or [""])[0]  # Ray appends its retry notes on further lines
    root = chain[-1]
    lines = str(root).strip().splitlines() or [""]
    return f"{type(root).__name__}: {lines[0].strip()}"


def ray_errors() -> tuple[type, ...]:
    import ray.exceptions

    return (ray.exceptions.RayError,)


def _summary(args: argparse.Namespace, manifest: dict) -> int:
    shares = ", ".join(f"{actor[:8]}: {n}" for actor, n in manifest["rows_per_actor"].items())
    print(f"labelled {manifest['rows_out']} of {manifest['rows_in']} rows into {args.output} in "
          f"{manifest['seconds']:.1f} s ({manifest['actors']} actor(s): {shares})")
    logger.debug(json.dumps(manifest))
    return 0
