"""The operator's pages under `/ui/admin`: every project, every project's credentials (issued
here with their secret shown once, and revoked), the audit log with filters, what the caches
take in the blob store with and without sharing, and what a node needs to use the registry
port as its mirror.

Only the operator (signed in with the admin token) may see them. The door checks each page's
action against the policy like any other, but a project's admin role allows every action, so
each handler also refuses anyone who is not the operator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from imagedepot.api.ui.door import AUDITED_PROJECT, ConsoleDoor, Viewer, form_number, form_of
from imagedepot.api.ui.render import page, secure
from imagedepot.domain.errors import DomainError, Forbidden, InvalidInput, NotFound
from imagedepot.domain.identity import Credential, Role, validate_project_name
from imagedepot.ports import REFUSED_STATUS, AuditEvent, AuditQuery, BlobUsage
from imagedepot.services.identity import IdentityService, IssuedCredential
from imagedepot.services.inventory import InventoryService

PROJECTS = "/ui/admin/projects"
CREDENTIALS = "/ui/admin/credentials"

AUDIT_LIMIT_DEFAULT = 100
AUDIT_LIMIT_MAX = 1000
EXPIRY_DAYS_MAX = 36500
KINDS = {"token": "token", "aksk": "access key pair (AK/SK)"}
RESULTS = {"": "any", "ok": "went through", "refused": "refused"}
UNSPECIFIED_HOSTS = {"", "0.0.0.0", "::"}
"""Bind addresses that name no one host a node could reach."""


def require_operator(viewer: Viewer) -> None:
    """The admin pages are the operator's alone: a project's own admin is refused too."""
    if not viewer.is_operator:
        raise Forbidden("the admin pages are the operator's: sign in with the admin token")


# --- what the pages show ------------------------------------------------------------------


def credential_view(credential: Credential, project_name: str, now: datetime) -> dict[str, Any]:
    if credential.revoked_at is not None:
        state = "revoked"
    else:
        state = "active" if credential.usable(now) else "expired"
    return {
        "id": credential.id,
        "project": project_name,
        "project_id": credential.project_id,
        "role": credential.role.value,
        "kind": credential.kind.value,
        "access_key": credential.access_key,
        "created_at": credential.created_at.isoformat(),
        "expires_at": None if credential.expires_at is None else credential.expires_at.isoformat(),
        "revoked_at": None if credential.revoked_at is None else credential.revoked_at.isoformat(),
        "state": state,
    }


def audit_view(event: AuditEvent, names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "at": event.at.isoformat(),
        "status": event.status,
        "refused": event.status >= REFUSED_STATUS,
        "action": event.action,
        "target": event.target,
        "credential_id": event.credential_id,
        "project": names.get(event.project_id or "", event.project_id),
        "remote": event.remote,
        "request_id": event.request_id,
    }


def usage_view(name: str, usage: BlobUsage) -> dict[str, Any]:
    saved = usage.referenced_bytes - usage.stored_bytes
    return {
        "name": name,
        "caches": usage.caches,
        "blobs": usage.blobs,
        "referenced_bytes": usage.referenced_bytes,
        "stored_bytes": usage.stored_bytes,
        "saved_bytes": saved,
        "saved_percent": 0
        if usage.referenced_bytes == 0
        else saved * 100 // usage.referenced_bytes,
    }


def node_endpoint(registry_endpoint: str, request: Request) -> str:
    """The registry port as a node should name it: the configured address, or, when the
    server binds every interface, the host this page was asked for on that port."""
    parts = urlsplit(registry_endpoint)
    host = parts.hostname or ""
    if host in UNSPECIFIED_HOSTS:
        host = request.url.hostname or "127.0.0.1"
    try:
        bracketed = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        bracketed = host
    return f"{parts.scheme}://{bracketed}:{parts.port}"


def hosts_toml(endpoint: str) -> str:
    """containerd's `hosts.toml` for docker.io with the registry port as a pull mirror; the
    upstream stays the fallback."""
    lines = [
        "# /etc/containerd/certs.d/docker.io/hosts.toml",
        'server = "https://registry-1.docker.io"',
        "",
        f'[host."{endpoint}"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    if endpoint.startswith("https://"):
        lines.append(
            '  # ca = "/etc/containerd/certs.d/docker.io/imagedepot-ca.crt"'
            "  # unless a CA the node trusts signed the certificate"
        )
    return "\n".join(lines) + "\n"


CONTAINERD_CONFIG = """# /etc/containerd/config.toml: where containerd looks for hosts.toml files
# containerd 1.x (config version 2):
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
# containerd 2.x (config version 3) names the section instead:
# [plugins."io.containerd.cri.v1.images".registry]
"""


# --- forms --------------------------------------------------------------------------------


def issue_from_form(identity: IdentityService, form: Mapping[str, Any]) -> IssuedCredential:
    """A new credential as the create form asks; InvalidInput names the form field."""
    project = str(form.get("project", "")).strip()
    validate_project_name(project)
    try:
        role = Role(str(form.get("role", "")))
    except ValueError:
        raise InvalidInput(
            f"role must be one of {', '.join(r.value for r in Role)}", field="role"
        ) from None
    kind = str(form.get("kind", "token"))
    if kind not in KINDS:
        raise InvalidInput("kind must be token or aksk", field="kind")
    days = form_number(form, "expires_in_days", within=(1, EXPIRY_DAYS_MAX))
    expires_in = None if days is None else timedelta(days=days)
    issue = identity.issue_access_key if kind == "aksk" else identity.issue_token
    return issue(project, role, expires_in)


def audit_query_from(
    identity: IdentityService, params: Mapping[str, str]
) -> tuple[AuditQuery, dict[str, str]]:
    """The audit search the filter form asks for, and the form's values to show again."""
    shown = {
        "project": params.get("project", "").strip(),
        "action": params.get("action", "").strip(),
        "result": params.get("result", ""),
        "limit": params.get("limit", "").strip() or str(AUDIT_LIMIT_DEFAULT),
    }
    if shown["result"] not in RESULTS:
        raise InvalidInput("result must be ok, refused or empty", field="result")
    limit = form_number(shown, "limit", within=(1, AUDIT_LIMIT_MAX)) or AUDIT_LIMIT_DEFAULT
    if len(shown["action"]) > 64:
        raise InvalidInput("action must be at most 64 characters", field="action")
    project_id = None
    if shown["project"]:
        try:
            project_id = identity.project_named(shown["project"]).id
        except NotFound:
            raise NotFound(
                f"project {shown['project']!r} does not exist", field="project"
            ) from None
    refused = {"": None, "ok": False, "refused": True}[shown["result"]]
    return AuditQuery(project_id, shown["action"] or None, refused, limit), shown


# --- routes -------------------------------------------------------------------------------


def admin_routes(
    door: ConsoleDoor, inventory: InventoryService | None, registry_endpoint: str | None
) -> list[Route]:
    identity = door.gate.identity
    audit = door.gate.audit
    clock = door.gate.clock

    async def home(_: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        return secure(RedirectResponse(PROJECTS, status_code=303))

    async def projects_page(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        summaries = await run_in_threadpool(identity.project_summaries)
        return page(
            request,
            "admin_projects.html",
            {
                "viewer": viewer,
                "projects": [
                    {
                        "name": s.project.name,
                        "id": s.project.id,
                        "created_at": s.project.created_at.isoformat(),
                        "credentials": s.credentials,
                        "usable_credentials": s.usable_credentials,
                        "caches": s.caches,
                        "anonymous_pull": s.anonymous_pull,
                    }
                    for s in summaries
                ],
            },
        )

    def credentials_values(
        viewer: Viewer, project_filter: str, form: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """What the credentials page shows (in a worker thread: it reads the store)."""
        error: DomainError | None = None
        try:
            listed = identity.list_credentials(project_filter or None)
        except NotFound as missing:
            listed, error = [], NotFound(missing.message, field="project")
        now = clock.now()
        return {
            "viewer": viewer,
            "credentials": [credential_view(c, name, now) for c, name in reversed(listed)],
            "project_filter": project_filter,
            "filter_error": error,
            "project_names": [s.project.name for s in identity.project_summaries()],
            "roles": [role.value for role in Role],
            "kinds": KINDS,
            "form": dict(form or {"project": viewer.project_name, "role": Role.MEMBER.value}),
            "error": None,
            "issued": None,
            "expiry_days_max": EXPIRY_DAYS_MAX,
        }

    async def credentials_page(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        project_filter = request.query_params.get("project", "").strip()
        values = await run_in_threadpool(credentials_values, viewer, project_filter)
        return page(
            request,
            "admin_credentials.html",
            values,
            status=404 if values["filter_error"] else 200,
        )

    async def create_credential(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        form = dict(await form_of(request))
        form.pop("csrf", None)
        try:
            issued = await run_in_threadpool(issue_from_form, identity, form)
            setattr(request.state, AUDITED_PROJECT, issued.project_id)
        except InvalidInput as error:
            values = await run_in_threadpool(credentials_values, viewer, "", form)
            values["error"] = error
            return page(request, "admin_credentials.html", values, status=400)
        values = await run_in_threadpool(credentials_values, viewer, "")
        # The secret goes out in this answer only (no-store), never in a URL or a redirect;
        # console.js turns this POST into a plain page in the history, so a reload asks the
        # list again instead of sending the form a second time.
        values["issued"] = {
            "project": issued.project_name,
            "project_id": issued.project_id,
            "credential_id": issued.credential_id,
            "role": issued.role.value,
            "token": issued.token,
            "access_key": issued.access_key,
            "secret_key": issued.secret_key,
        }
        return page(request, "admin_credentials.html", values)

    async def revoke_credential(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        form = await form_of(request)
        revoked = await run_in_threadpool(identity.revoke, request.path_params["credential_id"])
        setattr(request.state, AUDITED_PROJECT, revoked)
        back = str(form.get("project_filter", "")).strip()
        location = CREDENTIALS + (f"?{urlencode({'project': back})}" if back else "")
        return secure(RedirectResponse(location, status_code=303))

    async def audit_page(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        params = dict(request.query_params)

        def search() -> dict[str, Any]:
            error: DomainError | None = None
            events: list[AuditEvent] = []
            shown = {key: params.get(key, "") for key in ("project", "action", "result", "limit")}
            try:
                query, shown = audit_query_from(identity, params)
                events = audit.search(query)
            except (InvalidInput, NotFound) as refused:
                error = refused
            names = identity.project_names(e.project_id for e in events if e.project_id)
            return {
                "viewer": viewer,
                "events": [audit_view(event, names) for event in events],
                "filters": shown,
                "results": RESULTS,
                "error": error,
                "project_names": [s.project.name for s in identity.project_summaries()],
                "limit_max": AUDIT_LIMIT_MAX,
            }

        values = await run_in_threadpool(search)
        status = 200
        if values["error"] is not None:
            status = 404 if isinstance(values["error"], NotFound) else 400
        return page(request, "admin_audit.html", values, status=status)

    async def storage_page(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        if inventory is None:
            raise NotFound("this server counts no storage (it has no inventory)")

        def count() -> dict[str, Any]:
            storage = inventory.cache_storage()
            names = identity.project_names(storage.by_project)
            rows = sorted(
                (
                    usage_view(names.get(pid, pid), usage)
                    for pid, usage in storage.by_project.items()
                ),
                key=lambda row: (-row["referenced_bytes"], row["name"]),
            )
            return {
                "viewer": viewer,
                "projects": rows,
                "total": usage_view("All projects", storage.total),
                "scale": max((row["referenced_bytes"] for row in rows), default=0),
            }

        values = await run_in_threadpool(count)
        return page(request, "admin_storage.html", values)

    async def registry_page(request: Request, viewer: Viewer) -> Response:
        require_operator(viewer)
        if registry_endpoint is None:
            raise NotFound("this server was started without a registry port")
        summaries = await run_in_threadpool(identity.project_summaries)
        endpoint = node_endpoint(registry_endpoint, request)
        return page(
            request,
            "admin_registry.html",
            {
                "viewer": viewer,
                "registry_endpoint": registry_endpoint,
                "node_endpoint": endpoint,
                "hosts_toml": hosts_toml(endpoint),
                "containerd_config": CONTAINERD_CONFIG,
                "anonymous_projects": [s.project.name for s in summaries if s.anonymous_pull],
                "tls": endpoint.startswith("https://"),
            },
        )

    # Paths inside the console's mount at /ui.
    return [
        Route("/admin", door.page({"GET": ("console:admin:get", home)}), methods=["GET"]),
        Route(
            "/admin/projects",
            door.page({"GET": ("iam:project:list", projects_page)}),
            methods=["GET"],
        ),
        Route(
            "/admin/credentials",
            door.page(
                {
                    "GET": ("iam:credential:list", credentials_page),
                    "POST": ("iam:credential:create", create_credential),
                }
            ),
            methods=["GET", "POST"],
        ),
        Route(
            "/admin/credentials/{credential_id}/revoke",
            door.page({"POST": ("iam:credential:revoke", revoke_credential)}),
            methods=["POST"],
        ),
        Route(
            "/admin/audit",
            door.page({"GET": ("audit:event:list", audit_page)}),
            methods=["GET"],
        ),
        Route(
            "/admin/storage",
            door.page({"GET": ("console:storage:get", storage_page)}),
            methods=["GET"],
        ),
        Route(
            "/admin/registry",
            door.page({"GET": ("console:registry:get", registry_page)}),
            methods=["GET"],
        ),
    ]
