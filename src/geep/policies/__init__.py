"""Exit policies by name: each decides for a whole batch at once (see ``geep.policies.base``).

``get_policy(name)`` looks one up; ``POLICIES`` lists them. A new policy registers with :func:`register_policy`.
"""

from __future__ import annotations

from geep.errors import GeepError
from geep.policies.base import ALL_TASKS, KnobSpec, Memory, Policy, all_leave, entropy, none_leave, select_memory
from geep.policies.class_means import ClassMeansPolicy
from geep.policies.confidence import ConfidencePolicy
from geep.policies.deebert import DeeBertPolicy
from geep.policies.elbert import ElbertPolicy
from geep.policies.fastbert import FastBertPolicy
from geep.policies.full import FullPolicy
from geep.policies.geep import GeepPolicy, GeepVerifyPolicy, VerifyKnob
from geep.policies.hashee import HashEEPolicy
from geep.policies.lte import LearnedExitPolicy
from geep.policies.margin import MarginPolicy
from geep.policies.oracle import OraclePolicy
from geep.policies.pabee import PatiencePolicy
from geep.policies.ponder import PonderPolicy
from geep.policies.sentee import SenteePolicy
from geep.policies.trust_score import TrustScorePolicy
from geep.policies.vote import VotePolicy

POLICIES: dict[str, Policy] = {}


def register_policy(policy: Policy) -> Policy:
    """Adds a policy instance to the registry under ``policy.name``."""
    POLICIES[policy.name] = policy
    return policy


for _policy in (FullPolicy(), FastBertPolicy(), DeeBertPolicy(), ConfidencePolicy(), PatiencePolicy(),
                GeepPolicy(), GeepVerifyPolicy(), OraclePolicy(), LearnedExitPolicy(), ElbertPolicy(), VotePolicy(),
                MarginPolicy(), ClassMeansPolicy(), TrustScorePolicy(), PonderPolicy(), HashEEPolicy(), SenteePolicy()):
    register_policy(_policy)


def policies_for(task: str, *, signal: bool | str | None = False, class_means: bool = False,
                 trust_score: bool = False, token_hash: bool = False) -> list[str]:
    """The registered policies a model of ``task`` can run (``signal``: the name of its exit module, whose signal
    ``lte`` or ``ponder`` reads, or True for any; ``class_means``: it has fitted class means, which ``class-means``
    reads; ``trust_score``: it has fitted trust-score sets, which ``trust-score`` reads; ``token_hash``: it has
    HashEE's token hash, which ``hashee`` reads)."""
    def module_ok(p: Policy) -> bool:
        return not p.needs_signal or signal is True or (bool(signal) and signal == p.exit_module)

    return [name for name, p in POLICIES.items() if task in p.tasks and module_ok(p)
            and (class_means or not p.needs_class_means) and (trust_score or not p.needs_trust_score)
            and (token_hash or not p.halts_tokens)]


def get_policy(name: str | Policy) -> Policy:
    """The registered policy called ``name`` (a Policy passes through); GeepError listing the known ones."""
    if isinstance(name, Policy):
        return name
    if name not in POLICIES:
        raise GeepError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    return POLICIES[name]


__all__ = ["POLICIES", "ALL_TASKS", "policies_for", "KnobSpec", "Memory", "Policy", "VerifyKnob", "all_leave", "entropy", "get_policy",
           "none_leave", "register_policy", "select_memory"]
