"""Core v1 Secrets under `/api/v1/namespaces/{namespace}/secrets`: the
`kubernetes.io/dockerconfigjson` logins an ImageSnapshot's registries name as their
`imagePullSecret`. They are a different API group with their own Status details, so they
have their own module; the bodies are read as JSON or, as kubectl sends them, protobuf.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.objects import check_content_type, load_json
from imagedepot.api.k8s.protobuf import PROTOBUF, secret_from_protobuf
from imagedepot.api.k8s.status import Cause, StatusError, bad_request, render_error, status_body
from imagedepot.api.k8s.tables import Column, human_age, table_document, wants_table
from imagedepot.api.wire import utc_timestamp
from imagedepot.domain.errors import DomainError, Forbidden, InvalidInput, NotFound
from imagedepot.domain.identity import Principal
from imagedepot.services.secrets import DOCKER_CONFIG_JSON, SecretSummary

DOCKER_CONFIG_KEY = ".dockerconfigjson"
_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Type", "string", 0, "The type of secret."),
    ("Data", "string", 0, "The number of entries in data."),
    ("Age", "string", 0, "Time since the secret was created."),
]


def render_secret_error(error: DomainError) -> Response:
    """Secrets are core v1 objects: their Status names no group."""
    if isinstance(error, StatusError):
        body = status_body(error.code, error.message, reason=error.reason, causes=error.causes)
        if error.name is not None:
            body["details"] = {**body.get("details", {}), "name": error.name, "kind": "secrets"}
        return JSONResponse(body, status_code=error.code)
    return render_error(error)


def _secret_object(summary: SecretSummary, data: bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": summary.name,
            "namespace": summary.namespace,
            "creationTimestamp": utc_timestamp(summary.created_at),
        },
        "type": summary.type,
    }
    if data is not None:
        body["data"] = {DOCKER_CONFIG_KEY: base64.b64encode(data).decode()}
    return body


def secret_table(summaries: list[SecretSummary], now: datetime) -> dict[str, Any]:
    rows = [
        (
            [
                summary.name,
                summary.type,
                1,
                human_age((now - summary.created_at).total_seconds())
                if summary.created_at
                else "<unknown>",
            ],
            _secret_object(summary, None)["metadata"],
        )
        for summary in summaries
    ]
    return table_document(_COLUMNS, rows, {})


def parse_secret(body: Any, namespace: str) -> tuple[str, bytes]:
    """The name and `.dockerconfigjson` of a Secret body; 400/422 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object (a Secret)")
    if body.get("kind") not in (None, "Secret") or body.get("apiVersion") not in (None, "v1"):
        raise bad_request("the body must be a v1 Secret")
    raw_meta = body.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    causes: list[Cause] = []
    if not isinstance(name, str) or not name:
        causes.append(Cause("metadata.name", "Required value", "FieldValueRequired"))
    if meta.get("namespace") not in (None, "", namespace):
        raise bad_request(
            f"the namespace of the object ({meta.get('namespace')}) does not match the "
            f"namespace on the URL ({namespace})"
        )
    if body.get("type") != DOCKER_CONFIG_JSON:
        causes.append(
            Cause(
                "type",
                f"only {DOCKER_CONFIG_JSON} secrets are stored, got {body.get('type')!r}",
                "FieldValueNotSupported",
            )
        )
    config: bytes | None = None
    data, string_data = body.get("data") or {}, body.get("stringData") or {}
    if isinstance(string_data, dict) and isinstance(string_data.get(DOCKER_CONFIG_KEY), str):
        config = string_data[DOCKER_CONFIG_KEY].encode()
    elif isinstance(data, dict) and isinstance(data.get(DOCKER_CONFIG_KEY), str):
        try:
            config = base64.b64decode(data[DOCKER_CONFIG_KEY], validate=True)
        except binascii.Error:
            causes.append(Cause(f"data[{DOCKER_CONFIG_KEY}]", "must be base64"))
    else:
        causes.append(Cause(f"data[{DOCKER_CONFIG_KEY}]", "Required value", "FieldValueRequired"))
    if causes or config is None or not isinstance(name, str):
        summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
        raise StatusError(422, f'Secret "{name}" is invalid: {summary}', name=name, causes=causes)
    return name, config


def secret_body(request: Request, raw: bytes) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == PROTOBUF:
        return secret_from_protobuf(raw)
    check_content_type(request)
    return load_json(raw)


def secret_routes(context: ApiContext) -> list[Route]:
    service = context.secrets
    if service is None:
        return []
    identity = context.gate.identity
    clock = context.gate.clock

    def may_read(principal: Principal) -> bool:
        try:
            identity.authorize(principal, "secrets:get")
        except Forbidden:
            return False
        return True

    def list_secrets(request: Request, _: bytes, principal: Principal) -> Response:
        namespace = request.path_params["namespace"]
        summaries = service.summaries(principal.project_id, namespace)
        if wants_table(request):
            return JSONResponse(secret_table(summaries, clock.now()))
        reveal = may_read(principal)
        items = []
        for summary in summaries:
            data = None
            if reveal:
                data = service.reveal(principal.project_id, namespace, summary.name)[1]
            items.append(_secret_object(summary, data))
        return JSONResponse(
            {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items}
        )

    def create_secret(request: Request, raw: bytes, principal: Principal) -> Response:
        namespace = request.path_params["namespace"]
        name, config = parse_secret(secret_body(request, raw), namespace)
        if service.exists(principal.project_id, namespace, name):
            raise StatusError(
                409, f'secrets "{name}" already exists', reason="AlreadyExists", name=name
            )
        try:
            summary = service.put_docker_config(principal.project_id, namespace, name, config)
        except InvalidInput as error:
            where = error.field or "data"
            raise StatusError(
                422,
                f'Secret "{name}" is invalid: {where}: {error.message}',
                name=name,
                causes=[Cause(where, error.message)],
            ) from None
        context.notify_worker()
        shown = _secret_object(summary, config if may_read(principal) else None)
        return JSONResponse(shown, status_code=201)

    def get_secret(request: Request, _: bytes, principal: Principal) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        try:
            summary, data = service.reveal(principal.project_id, namespace, name)
        except NotFound:
            raise StatusError(404, f'secrets "{name}" not found', name=name) from None
        if wants_table(request):
            return JSONResponse(secret_table([summary], clock.now()))
        return JSONResponse(_secret_object(summary, data))

    def delete_secret(request: Request, _: bytes, principal: Principal) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        try:
            service.delete(principal.project_id, namespace, name)
        except NotFound:
            raise StatusError(404, f'secrets "{name}" not found', name=name) from None
        return JSONResponse(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": "secrets"},
            }
        )

    gate = context.gate
    collection = {
        "GET": ("secrets:list", list_secrets),
        "POST": ("secrets:create", create_secret),
    }
    item = {
        "GET": ("secrets:get", get_secret),
        "DELETE": ("secrets:delete", delete_secret),
    }
    base = "/api/v1/namespaces/{namespace}/secrets"
    return [
        Route(base, gate.route(collection, render_secret_error), methods=list(collection)),
        Route(f"{base}/{{name}}", gate.route(item, render_secret_error), methods=list(item)),
    ]
