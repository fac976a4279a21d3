"""Checking what a Python caller hands the inference entry points (``geep.predict``, ``geep.Predictor``,
``geep.build_table``, ``geep.calibrate``): a wrong argument is a GeepError naming the argument, the index and the
type, never a bare TypeError from deep inside, and never silently turned into a string (``b'...'`` tokenised as
``b ' ... '``, ``None`` as the word "None").
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from geep.errors import GeepError
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.tokens import unicode_problem


def check_model(model: Any) -> MultiExitClassifier | Cascade:
    """``model`` itself, when it is a MultiExitClassifier or a Cascade."""
    if not isinstance(model, (MultiExitClassifier, Cascade)):
        raise GeepError(f"model must be a MultiExitClassifier, got {_kind(model)}; load a saved directory with "
                        "MultiExitClassifier.from_pretrained(DIR) or geep.Predictor.from_pretrained(DIR)")
    return model


def as_texts(values: Any, name: str = "texts") -> list[str]:
    """A string, or an iterable of strings (a list, a tuple, a pandas Series, ...), as a list of N strings.

    Anything else (None, a number, bytes, a dict, a set, whose order is undefined) is a GeepError naming ``name``;
    an element that is not a string is one naming ``name[i]`` and its type, and so is a string that is not valid
    Unicode (a lone surrogate such as ``"\\ud800"``, which no tokenizer or UTF-8 file can hold). An empty or
    whitespace-only text is valid: it is answered like any other (the model reads its special tokens alone).
    """
    if isinstance(values, str):
        return [values]
    if values is None or isinstance(values, (bytes, bytearray, Mapping, set, frozenset)) \
            or not isinstance(values, Iterable):
        raise GeepError(f"{name} must be a string or a list of strings, got {_kind(values)}")
    texts = list(values)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = "; decode bytes first (e.g. .decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else (
                "; use '' for an empty text" if text is None else "")
            raise GeepError(f"{name}[{i}] must be a string, got {_kind(text)}{hint}")
        problem = unicode_problem(text)
        if problem is not None:
            raise GeepError(f"{name}[{i}] is not valid Unicode text: {problem}")
    return texts



def check_lengths(texts: list[str], labels: Any = None, text_pairs: list[str] | None = None) -> None:
    """GeepError when ``labels`` or ``text_pairs`` are not one per text (``geep.calibrate``'s rows pair up)."""
    for name, values in (("labels", labels), ("text pairs", text_pairs)):
        if values is not None and len(values) != len(texts):
            raise GeepError(f"{len(values)} {name} for {len(texts)} texts; give one per text")


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """``batch_size`` as an int when it is a whole number >= 1 (not a float such as 1.5, not a bool)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise GeepError(f"{name} must be a positive integer, got {_kind(batch_size)}")
    return int(batch_size)


def check_label(label: Any, index: int, num_labels: int, name: str = "labels") -> None:
    """A label is a name (str) or a class id in 0..num_labels-1."""
    if isinstance(label, str):
        return
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise GeepError(f"{name}[{index}] must be a label name or a class id, got {_kind(label)}")
    if not 0 <= label < num_labels:
        raise GeepError(f"{name}[{index}] is class id {label}, but the model has {num_labels} classes "
                        f"(0..{num_labels - 1})")


def label_ids(model: MultiExitClassifier, labels: Sequence[Any] | Tensor) -> Tensor:
    """Labels as the model's task's targets: for a classifier class ids (N,): a tensor or ints pass through (ints
    checked against the classes), names map through ``model.label_names`` (GeepError naming an unknown one); for
    another task ``Task.targets`` (multi-label: lists of names -> multi-hot (N, C); regression: numbers -> (N,))."""
    if model.config.task == "token-classification":  # a tensor (N, M), or each row's tag per position
        return model.task.targets(labels)
    if model.config.task != "classification":
        task = model.task
        return task.targets(labels if isinstance(labels, Tensor) else task.read_labels(list(labels), "labels"))
    if isinstance(labels, Tensor):
        return labels.long()
    index = {name: i for i, name in enumerate(model.label_names)}
    out = []
    for i, label in enumerate(labels):
        check_label(label, i, model.config.num_labels)
        if isinstance(label, str):
            if label not in index:
                raise GeepError(f"label {label!r} is not one of the model's labels: {', '.join(model.label_names)}")
            out.append(index[label])
        else:
            out.append(int(label))
    return torch.tensor(out, dtype=torch.long)


def _kind(value: Any) -> str:
    """``None``, or the value's type and a short repr: ``int 5``, ``bytes b'caf\\xc3\\xa9'``."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


@dataclass(frozen=True)
class GivenKnob:
    """A knob as a command line or a request gives it, before the policy is known (``--policy`` may be left to the
    model's default): ``threshold`` (the policy's first knob; None: the calibrated one) and geep-verify's
    ``continue_threshold``. ``geep.inference.spec.resolve_run`` turns it into the policy's knob (:func:`knob_from`)."""

    threshold: Any = None
    continue_threshold: Any = None
    cascade_thresholds: Any = None  # a cascade's: one per member boundary (``cascade_1`` ..), None: calibrated


def knob_from(policy: Any, threshold: Any = None, continue_threshold: Any = None,
              cascade_thresholds: Any = None) -> Any:
    """The knob a command line or a request gives ``policy`` (a ``geep.policies.Policy``): ``threshold`` alone as
    it is (None: the calibrated knob); with ``continue_threshold`` (geep-verify only, else a GeepError), the named
    values given, so what is left out keeps its calibrated value (``Policy.fill_knob``)."""
    if cascade_thresholds is not None:
        if not any(n.startswith("cascade_") for n in policy.knob_names):
            raise GeepError("cascade thresholds apply to a cascade (a directory written by `geep cascade`)")
        return _cascade_knob(policy, threshold, continue_threshold, cascade_thresholds)
    if continue_threshold is None:
        return threshold
    if "continue_threshold" not in policy.knob_names:
        raise GeepError(f"a continue threshold is geep-verify's knob; the {policy.name} policy has none")
    values = {"continue_threshold": continue_threshold}
    if threshold is not None:
        values[policy.knob_names[0]] = threshold
    return values


def _cascade_knob(policy: Any, threshold: Any, continue_threshold: Any, cascade_thresholds: Any) -> Any:
    """A cascade's named knob values from a command line: its member policy's threshold (if any) and one threshold
    per boundary; what is left out keeps its calibrated value."""
    names = [n for n in policy.knob_names if n.startswith("cascade_")]
    if continue_threshold is not None:
        raise GeepError("a continue threshold is geep-verify's knob; a cascade does not run geep-verify")
    thresholds = list(cascade_thresholds)
    if len(thresholds) != len(names):
        raise GeepError(f"this cascade has {len(names)} member boundar{'y' if len(names) == 1 else 'ies'}; give "
                        f"{len(names)} cascade threshold(s), got {len(thresholds)}")
    values = dict(zip(names, thresholds))
    inner = [n for n in policy.knob_names if not n.startswith("cascade_")]
    if threshold is not None:
        if not inner:
            raise GeepError(f"the {policy.name} policy's members take no threshold (got {threshold}); a cascade's "
                            "boundaries take --cascade-threshold")
        values[inner[0]] = threshold
    return values
