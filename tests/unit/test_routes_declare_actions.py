"""Every route of every dialect declares the action it is authorised as (or is public)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route

from imagedepot import bootstrap, config
from imagedepot.api.app import api_app, registry_app
from imagedepot.api.auth import PUBLIC, Gate
from imagedepot.api.context import ApiContext
from imagedepot.api.limits import RateLimiter
from imagedepot.services.console_sessions import ConsoleSessions


def every_route(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """Routes, and the routes inside mounts (the console is mounted at /ui)."""
    for route in routes:
        if isinstance(route, Mount):
            yield from every_route(route.routes)
        elif isinstance(route, Route):
            yield route


def test_every_route_declares_an_action_for_each_method(tmp_path: Path) -> None:
    core = bootstrap.open_core(config.Settings(data_dir=tmp_path, admin_token="t"))
    try:
        gate = Gate(core.identity, core.audit, RateLimiter(0, 1), core.clock, 1024)
        apps = [
            api_app(
                ApiContext(
                    gate,
                    core.caches,
                    lambda: None,
                    vm_images=core.vm_images,
                    image_sharing=core.image_sharing,
                    metrics=core.metrics,
                    inventory=core.inventory,
                    console=ConsoleSessions(core.store, core.identity, core.clock),
                )
            ),
            registry_app(bootstrap.registry_context(core)),
        ]
        registry_routes = {id(route) for route in apps[1].routes}
        routes = [route for app in apps for route in every_route(app.routes)]
        assert len(routes) >= 10
        assert any(route.path == "/caches/{cache_id}/delete" for route in routes)  # the console
        for route in routes:
            actions = getattr(route.endpoint, "actions", None)
            assert actions is not None, f"{route.path} declares no action"
            if actions == PUBLIC:
                continue
            for method in (route.methods or set()) - {"HEAD"}:
                if id(route) in registry_routes and method not in {"GET"}:
                    continue  # the registry port answers every other method 405 UNSUPPORTED
                assert ":" in actions.get(method, ""), f"{method} {route.path} has no action"
    finally:
        core.close()
