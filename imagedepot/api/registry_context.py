"""What the registry port needs from the core, handed in by `bootstrap`: serving what the caches
hold, and the pull tokens of its token flow."""

from __future__ import annotations

from dataclasses import dataclass

from imagedepot.api.limits import AuthFailureLimiter
from imagedepot.services.pull_tokens import PullTokens
from imagedepot.services.serving import ServingService


@dataclass(frozen=True)
class RegistryContext:
    serving: ServingService
    tokens: PullTokens
    auth_failures: AuthFailureLimiter
