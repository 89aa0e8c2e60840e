"""The cost ledger of one session: usage per model and in total, and the share spent on shadow evaluation.

Every provider call is accounted exactly once, in the same step that emits the event carrying its usage,
so the totals in the terminal event equal the sum of the usage in the event log. Shadow calls are real
spend and count in the totals, but never against the user's budget (:meth:`Ledger.own_cost`).
"""

from __future__ import annotations

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb


class Ledger:
    """What one session has spent so far."""

    def __init__(self) -> None:
        self.per_model: dict[str, pb.ModelUsage] = {}
        self.total = common_pb2.Usage()
        #: Spent on shadow evaluation: in the totals, but never counted against the user's budget.
        self.shadow_cost = 0.0

    def account(self, model: str, usage: common_pb2.Usage, *, shadow: bool = False) -> None:
        """Add one call's usage to the per-model and session totals."""
        if shadow:
            self.shadow_cost = round(self.shadow_cost + usage.cost_usd, 9)
        entry = self.per_model.setdefault(model, pb.ModelUsage(model=model))
        entry.calls += 1
        for target in (entry.usage, self.total):
            target.prompt_tokens += usage.prompt_tokens
            target.completion_tokens += usage.completion_tokens
            target.reasoning_tokens += usage.reasoning_tokens
            target.cached_tokens += usage.cached_tokens
            target.total_tokens += usage.total_tokens
            target.cost_usd = round(target.cost_usd + usage.cost_usd, 9)

    def own_cost(self) -> float:
        """What the session spent on its own answer: the total less shadow evaluation."""
        return round(self.total.cost_usd - self.shadow_cost, 9)

    def models(self) -> list[pb.ModelUsage]:
        """The per-model breakdown, in the order the models were first used."""
        return list(self.per_model.values())
