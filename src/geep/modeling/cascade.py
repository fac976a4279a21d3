"""A cascade of complete models (CascadeBERT: Li et al., Findings of EMNLP 2021): an ordered list of geep models
sharing labels, task and tokenizer, run as one model whose layers are the members' layers in sequence.

Notation: members m = 1..M with L_m layers and exits E_m; offset o_m = L_1 + ... + L_{m-1}. The cascade has
L = sum L_m layers; member m's exit k is the cascade's exit o_m + k, so E = union of (o_m + E_m); member m's last
exit o_m + L_m is a **boundary** b_m for m < M. A row that goes on past b_m starts member m + 1 from its embeddings
(``geep.runtime.cascade``), so the scheduler, the executor, the policies' batch decisions, the replay backend, the
server's layer-level batching and Ray run a cascade unchanged; the rule at each boundary is
``geep.policies.cascade``.

A saved cascade is a small directory: ``cascade.json`` names its members (paths relative to the directory when
they were given so) and holds what calibration stores (the knobs and default policy per precision, each member's
temperature per precision), and a ``README.md``. Members are loaded from their own directories, each with every
check a model gets; members whose labels (as sets), task or tokenisation differ are refused in one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from geep.errors import GeepError
from geep.io import write_text_atomic
from geep.modeling.config import GeepConfig, StoredDefaults
from geep.modeling.model import CONFIG_NAME, MultiExitClassifier
from geep.tasks import Classification, Task

CASCADE_NAME = "cascade.json"
FORMAT_VERSION = 1
# Texts every member must tokenise alike: a row is tokenised once, for all of them.
PROBE_TEXTS = ["The quick brown fox, 123 jumps!", "Élan vital — naïve café", "a", ""]


@dataclass
class CascadeConfig(StoredDefaults):
    """What ``cascade.json`` holds. ``members``: each member's directory as stored (relative to the cascade's
    directory, or absolute); ``label_names``: the first member's, the order answers use; ``default_knobs`` /
    ``default_policy``: as a model's (``GeepConfig``), filled by ``geep calibrate``; ``temperatures``: {precision:
    [T_1 .. T_{M-1}]}, each boundary member's temperature (Guo et al. 2017), filled by ``geep calibrate``."""

    members: list[str]
    label_names: list[str]
    default_knobs: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    default_policy: dict[str, str] = field(default_factory=dict)
    temperatures: dict[str, list[float]] = field(default_factory=dict)
    # what each knob was calibrated on, {precision: {policy: evidence}}: as a model's (GeepConfig.calibration)
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    task: str = "classification"
    format_version: int = FORMAT_VERSION
    # read from the first member (not stored): what the data readers and the inference side ask a model's config
    first: GeepConfig | None = field(default=None, repr=False, compare=False)

    # -------------------------------------------------------------------- what a model's GeepConfig offers
    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    exit_table = None  # a cascade has no exit table of its own
    objective = "cascade"
    exit_module = None  # members have none (check_members)
    num_signals = 0

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def make_task(self) -> Task:
        """The cascade's task: a classifier over its label names (the only task its rule reads)."""
        return Classification(tuple(self.label_names))

    @property
    def text_column(self) -> str:
        return self.first.text_column

    @property
    def text_pair_column(self) -> str | None:
        return self.first.text_pair_column

    @property
    def label_column(self) -> str:
        return self.first.label_column

    @property
    def max_length(self) -> int:
        return self.first.max_length

    def to_dict(self) -> dict[str, Any]:
        return {"members": list(self.members), "label_names": list(self.label_names),
                "default_knobs": self.default_knobs, "default_policy": self.default_policy,
                "temperatures": self.temperatures, "calibration": self.calibration, "task": self.task,
                "format_version": self.format_version}

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> "CascadeConfig":
        if not isinstance(data, dict):
            raise GeepError(f"{where} is damaged: it must hold a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise GeepError(f"{where}: unknown cascade format_version {data.get('format_version')!r} (this geep "
                            f"reads {FORMAT_VERSION})")
        known = {"members", "label_names", "default_knobs", "default_policy", "temperatures", "calibration", "task",
                 "format_version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeepError(f"{where} is damaged: unknown keys {', '.join(unknown)}")
        members, labels = data.get("members"), data.get("label_names")
        ok = (isinstance(members, list) and len(members) >= 2 and all(isinstance(m, str) and m for m in members)
              and isinstance(labels, list) and all(isinstance(x, str) for x in labels)
              and isinstance(data.get("default_knobs", {}), dict) and isinstance(data.get("default_policy", {}), dict)
              and isinstance(data.get("temperatures", {}), dict) and isinstance(data.get("calibration", {}), dict)
              and all(isinstance(ts, list) and len(ts) == len(members) - 1
                      and all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in ts)
                      for ts in data.get("temperatures", {}).values()))
        if not ok:
            raise GeepError(f"{where} is damaged: it needs at least 2 member paths, the label names, and one "
                            "positive temperature per member boundary")
        return cls(**{k: v for k, v in data.items()})


class Cascade(nn.Module):
    """Members run in order, as one model of L = sum L_m layers (see the module docstring). Answers are in the
    first member's label order (a member whose labels are the same names in another order is read through a
    permutation: ``label_order``)."""

    def __init__(self, members: Sequence[MultiExitClassifier], config: CascadeConfig) -> None:
        super().__init__()
        if len(members) < 2:
            raise GeepError(f"a cascade needs at least 2 members, got {len(members)}")
        check_members(members, config.members)
        self.members = nn.ModuleList(members)
        self.config = config
        config.first = members[0].config
        offsets, total = [], 0
        for member in members:
            offsets.append(total)
            total += member.num_layers
        self.offsets = offsets
        self.num_layers = total
        self.exit_layers = [o + k for o, member in zip(offsets, members) for k in member.exit_layers]
        self.boundaries = [o + member.num_layers for o, member in zip(offsets[:-1], members[:-1])]
        names = config.label_names
        self.label_order = [[member.label_names.index(name) for name in names] for member in members]
        self.exit_table = None

    # ------------------------------------------------------------------------------ what the inference side uses
    @property
    def label_names(self) -> list[str]:
        return self.config.label_names

    class_means = None  # a cascade's exits carry its members' class probabilities only
    trust_sets = None

    @property
    def output_size(self) -> int:
        """Columns of each exit's output: C (members are classifiers without an exit module)."""
        return len(self.config.label_names)

    @property
    def task(self) -> Task:
        """The cascade's task (``geep.tasks``): a classifier over its label names."""
        return self.config.make_task()

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def tokenizer(self) -> Any:
        return self.members[0].tokenizer

    @property
    def pad_token_id(self) -> int:
        return self.members[0].pad_token_id

    @property
    def max_length(self) -> int:
        return self.members[0].max_length

    @property
    def member_exits(self) -> int:
        """The most exits a member has (what a knob counting exits, PABEE's, ranges over)."""
        return max(len(member.exit_layers) for member in self.members)

    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> dict[str, list[list[int]]]:
        """Token ids of each row, as every member tokenises them (checked when the cascade is built)."""
        return self.members[0].tokenize(texts, text_pairs)

    def exit_members(self, layers: torch.Tensor) -> torch.Tensor:
        """The member (1-based) each row left in (N,), from the cascade's exit layers (N,)."""
        starts = torch.tensor(self.offsets[1:], dtype=layers.dtype, device=layers.device)
        return torch.bucketize(layers, starts) + 1  # layer l is in the last member whose offset is below l

    def member_of(self, layer: int) -> int:
        """The member (0-based) whose layers contain the cascade's layer ``layer`` (1..L)."""
        for m in range(len(self.members) - 1, -1, -1):
            if layer > self.offsets[m]:
                return m
        raise ValueError(f"layer {layer} is not in 1..{self.num_layers}")

    # --------------------------------------------------------------------------------------------- saving
    def save_config(self, directory: str | os.PathLike) -> None:
        """Rewrites ``cascade.json`` (atomically): what calibration changes."""
        write_text_atomic(Path(directory) / CASCADE_NAME,
                          json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes ``cascade.json`` and a short ``README.md`` (the members stay where they are)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_config(directory)
        lines = ["# geep cascade", "", f"Labels: {', '.join(self.label_names)}.", "",
                 "| member | directory | layers | exits | objective | cascade layers |", "|---:|---|---:|---|---|---|"]
        for m, (member, path) in enumerate(zip(self.members, self.config.members), 1):
            o = self.offsets[m - 1]
            lines.append(f"| {m} | `{path}` | {member.num_layers} | {member.exit_layers} | "
                         f"{member.config.objective} | {o + 1}..{o + member.num_layers} |")
        lines += ["", "A row runs member 1 under its policy; it leaves at a member's last exit when that member's "
                  "calibrated confidence reaches its threshold, else it runs the next member from its embeddings "
                  "(CascadeBERT, Li et al. 2021). `geep calibrate --model THIS_DIR` fits the thresholds.", ""]
        write_text_atomic(directory / "README.md", "\n".join(lines))

    @classmethod
    def from_members(cls, paths: Sequence[str | os.PathLike], output: str | os.PathLike | None = None
                     ) -> "Cascade":
        """A new cascade of the model directories ``paths``, in order; stored relative to ``output`` (where the
        cascade will be saved) when a path was given relative, else as given."""
        if len(paths) < 2:
            raise GeepError(f"a cascade needs at least 2 members (--model twice or more), got {len(paths)}")
        resolved = [Path(p).resolve() for p in paths]
        if len(set(resolved)) != len(resolved):
            raise GeepError("the same member is given twice")
        members = [_load_member(Path(p), str(p)) for p in paths]
        stored = []
        for p in paths:
            if output is not None and not Path(p).is_absolute():
                stored.append(os.path.relpath(Path(p).resolve(), Path(output).resolve()))
            else:
                stored.append(str(Path(p).resolve()))
        config = CascadeConfig(stored, list(members[0].label_names), task=_task(members[0]))
        return cls(members, config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None) -> "Cascade":
        """Loads a cascade directory: ``cascade.json`` and each member from its own directory."""
        directory = Path(directory)
        path = directory / CASCADE_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GeepError(f"cannot read {path}: {e}") from None
        config = CascadeConfig.from_dict(data, path)
        members = [_load_member(directory / member, member) for member in config.members]
        cascade = cls(members, config)
        if cascade.label_names != list(members[0].label_names):
            raise GeepError(f"{path} is damaged: its label names {cascade.label_names} are not its first member's "
                            f"{members[0].label_names}")
        cascade.eval()
        if device is not None:
            cascade.to(device)
        return cascade


def is_cascade_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a cascade (``cascade.json``)."""
    return (Path(directory) / CASCADE_NAME).is_file()


def load_model(directory: str | os.PathLike, device: str | torch.device | None = None
               ) -> "MultiExitClassifier | Cascade":
    """The model in ``directory``: a cascade when it holds ``cascade.json``, else a geep model. Every surface that
    takes ``--model DIR`` loads through this."""
    if is_cascade_dir(directory):
        return Cascade.from_pretrained(directory, device=device)
    return MultiExitClassifier.from_pretrained(directory, device=device)


def _task(member: MultiExitClassifier) -> str:
    return getattr(member.config, "task", None) or "classification"


def _load_member(directory: Path, name: str) -> MultiExitClassifier:
    """Member ``name`` (as given or stored) from ``directory``: a geep model, else one line saying what it is."""
    if not directory.is_dir():
        raise GeepError(f"cascade member {name}: no directory at {directory}")
    if is_cascade_dir(directory):
        raise GeepError(f"cascade member {name} is itself a cascade; name its members instead")
    if not (directory / CONFIG_NAME).is_file():
        raise GeepError(f"cascade member {name} is not a geep model (no {CONFIG_NAME} in {directory})")
    try:
        return MultiExitClassifier.from_pretrained(directory)
    except GeepError as e:
        raise GeepError(f"cascade member {name}: {e}") from None


def check_members(members: Sequence[MultiExitClassifier], names: Sequence[str]) -> None:
    """GeepError (one line) unless every member has the first's labels (as a set), task, tokenisation and device."""
    first, first_name = members[0], names[0]
    for member, name in zip(members, names):
        extra = (member.config.exit_module is not None or getattr(member, "class_means", None) is not None
                 or getattr(member, "trust_sets", None) is not None)
        if _task(member) != "classification" or extra:
            raise GeepError(f"cascade member {name} is a {_task(member)} model"
                            + (" with an exit module or fitted statistics" if extra else "")
                            + ": a cascade's rule reads each member's class probabilities; its members are "
                            "classifiers without one")
    for member, name in zip(members[1:], names[1:]):
        if sorted(member.label_names) != sorted(first.label_names):
            raise GeepError(f"cascade members disagree on labels: {first_name} has {first.label_names}, {name} has "
                            f"{member.label_names}")
        if _task(member) != _task(first):
            raise GeepError(f"cascade members disagree on the task: {first_name} is {_task(first)}, {name} is "
                            f"{_task(member)}")
        if member.tokenizer is None or first.tokenizer is None:
            raise GeepError("every cascade member needs its tokenizer (a row is tokenised once, for all of them)")
        if member.max_length != first.max_length or member.tokenize(PROBE_TEXTS) != first.tokenize(PROBE_TEXTS) \
                or member.tokenizer.get_vocab() != first.tokenizer.get_vocab():
            raise GeepError(f"cascade members tokenise differently ({first_name}: {type(first.tokenizer).__name__}, "
                            f"{len(first.tokenizer)} tokens, max length {first.max_length}; {name}: "
                            f"{type(member.tokenizer).__name__}, {len(member.tokenizer)} tokens, max length "
                            f"{member.max_length}); a row is tokenised once, for all of them")
        if member.device != first.device:
            raise GeepError(f"cascade members on different devices ({first.device}, {member.device})")
