"""``hashee``: HashEE's inference (Sun et al., "A Simple Hash-Based Early Exiting Approach For Language Understanding
and Generation", Findings of ACL 2022, Sec. 3): every token exits at the layer a hash gave it before the model ran
(``geep.modeling.token_hash``); from there on its hidden state is copied forward and still read as a key and a value
by the tokens that go on, and the row is predicted from the last layer. No internal classifier, no knob: the rule
is "token t is active at layer k iff k <= hash(t)", applied inside the backend step (``halts_tokens``;
``geep.runtime.token_halting``). No row leaves before L.
"""

from __future__ import annotations

from torch import Tensor

from geep.policies.base import ALL_TASKS, Memory, Policy, none_leave


class HashEEPolicy(Policy):
    name = "hashee"
    reads_exits = False  # only exit L's head runs
    halts_tokens = True
    tasks = ALL_TASKS
    reads = "the model's token hash (no exit's output)"

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        return none_leave(logits), memory
