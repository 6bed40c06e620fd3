"""Requests that came through a reverse proxy: who sent them, over what, to which host name.

Behind a proxy that terminates TLS (`--host 0.0.0.0`, nginx in front), the absolute links
imagedepot writes (Glance's `self`/`file`/version links, the registry's token realm in
`WWW-Authenticate`) must name the address the client used, not the one the proxy reached.
Those headers are believed only from the configured proxies (`forwarded_allow_ips`); from
anyone else they are ignored, since a client could otherwise send the token realm, and so
its credentials, anywhere. uvicorn's middleware does X-Forwarded-For and -Proto; this adds
X-Forwarded-Host, which it leaves alone, under the same trust decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


def _first(value: bytes) -> bytes:
    """The first entry of a comma-separated header: the one the client-facing proxy wrote."""
    return value.split(b",", 1)[0].strip()


class ForwardedHeaders:
    """Apply X-Forwarded-For, -Proto and -Host of requests whose peer is a trusted proxy."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self._proxied = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted))  # type: ignore[arg-type]
        self._trusted = self._proxied.trusted_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer is not None and peer[0] in self._trusted:
                headers = scope["headers"]
                host = next((v for k, v in headers if k == b"x-forwarded-host"), None)
                if host is not None and _first(host):
                    kept = [(k, v) for k, v in headers if k != b"host"]
                    scope = {**scope, "headers": [*kept, (b"host", _first(host))]}
        await self._proxied(scope, receive, send)  # type: ignore[arg-type]


def behind_proxies(app: ASGIApp, trusted: Sequence[str]) -> ASGIApp:
    """`app` believing the forwarded headers of `trusted` proxies; `app` itself for none."""
    return ForwardedHeaders(app, trusted) if trusted else app
