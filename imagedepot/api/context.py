"""What the ports need from the core, handed in by `bootstrap`: for the API port's dialects the
services and a way to tell the worker there is new work; for the registry port serving what
the caches hold and the pull tokens of its token flow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagedepot.api.auth import Gate
from imagedepot.api.limits import AuthFailureLimiter
from imagedepot.api.metrics import Metrics
from imagedepot.services.caches import CacheService
from imagedepot.services.console_sessions import ConsoleSessions
from imagedepot.services.image_sharing import ImageSharingService
from imagedepot.services.inventory import InventoryService
from imagedepot.services.pull_through import PullThrough
from imagedepot.services.pull_tokens import PullTokens
from imagedepot.services.secrets import SecretService
from imagedepot.services.serving import ServingService
from imagedepot.services.upstreams import UpstreamService
from imagedepot.services.vmimages import VmImageService

Readiness = Callable[[], str | None]
"""None when the database and the blob store answer; otherwise what does not."""


@dataclass(frozen=True)
class ApiContext:
    gate: Gate
    caches: CacheService
    notify_worker: Callable[[], None]
    vm_images: VmImageService | None = None
    """The VM image dialects (Glance, DiDi) are mounted only when this is given."""
    image_sharing: ImageSharingService | None = None
    """Glance's image members; without it the member routes are not mounted."""
    secrets: SecretService | None = None
    """The core v1 Secret API of the Kubernetes dialect is mounted only when this is given."""
    metrics: Metrics | None = None
    inventory: InventoryService | None = None
    """With both, `/metrics` is served."""
    readiness: Readiness | None = None
    """What `/readyz` asks; without it `/readyz` answers like `/healthz`."""
    console: ConsoleSessions | None = None
    """The web console under `/ui/` is mounted only when this is given."""
    upstreams: UpstreamService | None = None
    """`/v5/upstreams` (what each project may pull through) is mounted only when given."""
    registry_endpoint: str | None = None
    """The registry port as this server binds it (`http://HOST:PORT`, https under TLS), for
    the console's node-mirror settings."""

    def required_vm_images(self) -> VmImageService:
        """The VM image service, for the dialects mounted only when it is given."""
        if self.vm_images is None:
            raise RuntimeError("the VM image dialects are mounted without a VM image service")
        return self.vm_images


@dataclass(frozen=True)
class RegistryContext:
    serving: ServingService
    tokens: PullTokens
    auth_failures: AuthFailureLimiter
    readiness: Readiness | None = None
    pull_through: PullThrough | None = None
    """Pulls through the projects' upstreams; without it the port serves only the caches."""
