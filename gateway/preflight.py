"""Checks that need more than the policy's schema: the router model loads, every price is known.

`slmgw serve` and `slmgw config validate` run them before anything starts, so a missing router model
or an unpriced baseline is one clear line, not a stack trace from inside the server's start-up.
"""

from __future__ import annotations

from gateway.config import Policy


def preflight(policy: Policy) -> list[str]:
    """Problems that would stop the gateway from starting (empty when it can start)."""
    problems: list[str] = []
    try:
        from router.base import build_router

        build_router(policy)
    except (ValueError, OSError) as exc:  # router.model.ModelError is a ValueError
        problems.append(f"router: {exc}")
    try:
        from router.difficulty import hard_gate

        hard_gate(policy)
    except ValueError as exc:  # DifficultyError
        problems.append(f"router.difficulty_model_path: {exc}")
    try:
        from gateway.costs import CostModel

        CostModel.from_policy(policy)
    except ValueError as exc:  # CostConfigError
        problems.append(f"costs: {exc}")
    return problems
