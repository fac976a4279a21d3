"""`geep cascade`: save an ordered list of geep models as one cascade (CascadeBERT, Li et al. 2021).

Every member is loaded and checked first (a geep model, the same labels, task and tokenisation as the first); then
the output directory gets ``cascade.json`` naming the members and a ``README.md``. Nothing is copied: the members
stay in their directories. Every surface that takes ``--model DIR`` takes the cascade's directory.
"""

from __future__ import annotations

import argparse

from geep.errors import GeepError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cascade", help="save geep models as a cascade (small first, large last)",
        description="Save an ordered list of geep models as a cascade: a row runs member 1 under its policy and "
                    "leaves at member 1's last exit when its calibrated confidence reaches the member's threshold, "
                    "else runs member 2 from its embeddings, and so on (CascadeBERT). Calibrate the thresholds with "
                    "`geep calibrate --model OUTPUT`.")
    p.add_argument("--model", required=True, action="append", metavar="DIR",
                   help="a member: a directory written by `geep train`; repeat, smallest first (at least 2)")
    p.add_argument("--output", required=True, metavar="DIR", help="the cascade's directory (cascade.json, README.md)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geep.cli.outputs import check_output_dir
    from geep.modeling.cascade import Cascade

    if len(args.model) < 2:
        raise GeepError(f"a cascade needs at least 2 members (--model twice or more), got {len(args.model)}")
    output = check_output_dir(args.output, overwrite=args.overwrite, models=args.model)
    cascade = Cascade.from_members(args.model, output)  # every member loaded and checked before anything is written
    cascade.save_pretrained(output)
    layers = " + ".join(str(m.num_layers) for m in cascade.members)
    print(f"saved the cascade {output}: {len(cascade.members)} members ({layers} layers), labels "
          f"{', '.join(cascade.label_names)}; calibrate it with `geep calibrate --model {output} --dev DATA ...`")
    return 0
