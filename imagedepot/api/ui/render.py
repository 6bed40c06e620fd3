"""Rendering console pages: Jinja2 templates from inside the package with autoescaping on, and
the headers every console answer carries (a Content-Security-Policy that allows no inline
script or style, no framing, no caching of pages, no referrer to other sites)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it browsers send `Origin: null` on the console's own forms.
    "Referrer-Policy": "same-origin",
}

_templates = Environment(
    loader=PackageLoader("imagedepot.api.ui", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def secure(response: Response, *, cache: bool = False) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def page(request: Request, template: str, values: Mapping[str, Any], status: int = 200) -> Response:
    """A whole page; `values` are escaped wherever a template prints them."""
    body = _templates.get_template(template).render(request=request, **values)
    return secure(HTMLResponse(body, status_code=status))
