"""Every route of every dialect declares the action it is authorised as (or is public)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Route

from imagedepot import bootstrap, config
from imagedepot.api.app import api_app, registry_app
from imagedepot.api.auth import PUBLIC, Gate
from imagedepot.api.context import ApiContext
from imagedepot.api.limits import RateLimiter


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
                )
            ),
            registry_app(bootstrap.registry_context(core)),
        ]
        registry_routes = {id(route) for route in apps[1].routes}
        routes = [route for app in apps for route in app.routes if isinstance(route, Route)]
        assert len(routes) >= 10
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
