"""The long-lived objects one gateway process shares, built once from the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.auth import KeyRing
from gateway.config import Policy
from router.base import Router
from serving.dispatch import Dispatcher


@dataclass
class Services:
    policy: Policy
    router: Router
    dispatcher: Dispatcher
    keys: KeyRing
    extras: dict[str, Any] = field(default_factory=dict)
    """Optional components (cache, ledger, health) registered by name."""

    async def close(self) -> None:
        await self.dispatcher.close()
