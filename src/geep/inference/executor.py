"""The executor: the one loop that runs a scheduler's steps on a backend under an exit policy.

Each step: assemble the step's rows (embed fresh rows; reuse, select or pool the stored states of rows that ran
before, with their policy memory), run the layers to the step's exit, read its head, ask the policy which rows
leave (every row leaves at L), and hand the decision to the scheduler. One host sync per step (the decision).
The work of each step is counted in a :class:`FlopsCount` from the step itself (rows and padded length), so a run
on the replay backend counts exactly what the same run on the model counts. Under a policy that ``halts_tokens``
(HashEE) fresh rows are embedded with their tokens' hashed layers, the backend's ``run_layers`` runs only the tokens
still active, and the step's layers are counted per token (``FlopsCount.add_token_layers``): the same loop.

Offline prediction, calibration (on the replay backend), the all-exits pass and the server all run this loop:
``geep.inference.offline.run_rows`` adds every row at time 0 and runs until the scheduler is empty; a server adds
rows as requests arrive and calls :meth:`Executor.step` (or plans with the scheduler and calls
:meth:`Executor.run_step`), one step at a time from one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from geep.policies import Memory, Policy, select_memory
from geep.runtime.base import Backend
from geep.runtime.flops import FlopsCount
from geep.scheduling import Row, Scheduler, Step


@dataclass
class _Group:
    """The output of a step whose rows did not all leave: its state, the policy memory, rows still to run."""

    state: Any
    memory: Memory
    size: int
    live: int


@dataclass
class Finished:
    """Rows that left at ``layer`` (in step order) and the outputs they answer with (F, K + S): the exit's own, or
    what the policy answers from its memory (``Policy.outputs``: vote)."""

    rows: list[Row]
    logits: Tensor
    layer: int


class Executor:
    """Runs ``scheduler``'s steps on ``backend`` under ``policy`` at ``knob`` (already resolved).

    ``labels`` (indexed by row id, on any device): for policies that read them (``oracle``). ``flops``: a count to
    add every step to. ``on_head(step, row_ids, logits)``: called with every head read (the all-exits pass).
    """

    def __init__(self, scheduler: Scheduler, backend: Backend, policy: Policy, knob: Any = None, *,
                 labels: Tensor | None = None, flops: FlopsCount | None = None,
                 on_head: Callable[[Step, Tensor, Tensor], None] | None = None) -> None:
        self.scheduler, self.backend, self.policy, self.knob = scheduler, backend, policy, knob
        self.labels = None if labels is None else labels.to(backend.device)
        self.flops, self.on_head = flops, on_head
        self.groups: dict[int, _Group] = {}

    def step(self) -> Finished | None:
        """Runs the next step; returns the rows that left (possibly none), or None when nothing was scheduled.
        (A caller with a clock, the server's worker, plans with ``scheduler.schedule(now)`` and calls
        :meth:`run_step`.)"""
        step = self.scheduler.schedule()
        if step is None:
            return None
        return self.run_step(step)

    def run_step(self, step: Step) -> Finished:
        """Runs a step the scheduler planned (:meth:`step` plans and runs; a server plans apart to know which rows
        an exception in the step concerns). If the step raises, its rows are gone from the scheduler and their
        stored states are forgotten; every other row's stay as they were."""
        try:
            state, memory = self._assemble(step)
        except Exception:
            self.release(step.rows)
            raise
        state = self.backend.run_layers(state, step.end)
        logits = self.backend.read_head(state)  # (B, C)
        if self.flops is not None:
            token_layers = self.backend.token_layers(state) if self.policy.halts_tokens else None
            if token_layers is None:
                self.flops.add_layers(step.start, step.end, step.size, step.seq_len)
            else:  # token halting: each token counted for its own layers
                self.flops.add_token_layers(step.start, step.end, token_layers)
            self.flops.add_head(step.end, step.size, step.seq_len)
        if self.on_head is not None:
            self.on_head(step, self.backend.row_ids(state), logits)
        if step.end == self.scheduler.num_layers:
            leave = [True] * step.size
            if self.policy.answers_from_memory:  # the vote of every exit, the last included
                memory = self.policy.decide(logits, self.knob, memory)[1]
        else:
            decision, memory = self.policy.decide_at(step.end, logits, self.knob, memory)  # (B,) bool
            leave = decision.tolist()  # the one host sync of the step
        outputs = self.policy.outputs(logits, memory) if self.policy.answers_from_memory else logits  # (B, K + S)
        finished = self.scheduler.update(step, leave)
        if len(finished) < step.size:
            self.groups[step.id] = _Group(state, memory, step.size, step.size - len(finished))
        if len(finished) == step.size:
            return Finished(finished, outputs, step.end)
        leaving = torch.tensor([i for i, out in enumerate(leave) if out], dtype=torch.long, device=logits.device)
        return Finished(finished, outputs.index_select(0, leaving), step.end)

    def run(self) -> Iterator[Finished]:
        """Steps until the scheduler has nothing to run."""
        while (finished := self.step()) is not None:
            yield finished

    def release(self, rows: Sequence[Row]) -> None:
        """Forgets the stored states of rows dropped from the scheduler (a server's timed-out requests)."""
        for row in rows:
            self._consume(row.group, 1)

    # --------------------------------------------------------------------------------------------- internals
    def _assemble(self, step: Step) -> tuple[Any, Memory]:
        """The step's rows as one state, in step order, with their policy memory. The groups the rows came from
        are marked consumed only once the state is built, so a failure here leaves them for :meth:`release`."""
        device = self.backend.device
        if step.start == 0:
            ids = [row.id for row in step.rows]
            types = None if step.rows[0].token_type_ids is None else [row.token_type_ids for row in step.rows]
            state = self.backend.embed(ids, [row.input_ids for row in step.rows], types,
                                       halt_tokens=self.policy.halts_tokens)
            labels = None
            if self.labels is not None:
                labels = self.labels.index_select(0, torch.tensor(ids, dtype=torch.long, device=device))
            return state, self.policy.start(step.size, device, labels)
        by_group: dict[int, list[tuple[int, int]]] = {}  # group -> (position in the step, slot in the group)
        for i, row in enumerate(step.rows):
            by_group.setdefault(row.group, []).append((i, row.slot))
        if len(by_group) == 1:
            ((gid, pairs),) = by_group.items()
            group = self.groups[gid]
            slots = [slot for _, slot in pairs]
            if len(slots) == group.size and slots == list(range(group.size)):
                assembled = group.state, group.memory  # the same rows in the same order: as they are
            else:
                keep = torch.tensor(slots, dtype=torch.long, device=device)
                assembled = self.backend.select(group.state, keep), select_memory(group.memory, keep)
            self._consume(gid, len(slots))
            return assembled
        parts, memories, positions = [], [], []
        for gid, pairs in by_group.items():
            group = self.groups[gid]
            keep = torch.tensor([slot for _, slot in pairs], dtype=torch.long, device=device)
            parts.append((group.state, keep))
            memories.append(select_memory(group.memory, keep))
            positions += [i for i, _ in pairs]
        order = torch.empty(len(positions), dtype=torch.long)
        order[torch.tensor(positions)] = torch.arange(len(positions))  # step position -> concatenated position
        order = order.to(device)
        memory = {name: torch.cat([m[name] for m in memories]).index_select(0, order) for name in memories[0]}
        state = self.backend.gather(parts, order)
        for gid, pairs in by_group.items():
            self._consume(gid, len(pairs))
        return state, memory

    def _consume(self, gid: int, n: int) -> None:
        group = self.groups.get(gid)
        if group is None:
            return
        group.live -= n
        if group.live <= 0:
            del self.groups[gid]
