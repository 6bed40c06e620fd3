"""Glance image members (`/v2/images/{id}/members[/{member_id}]` and their schemas): how an
owner shares an image with other projects, and how those projects accept it, as openstacksdk's
`add_member`, `members`, `get_member`, `update_member` and `remove_member` call them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.context import ApiContext
from imagedepot.api.glance.errors import render_error
from imagedepot.api.wire import json_body, utc_timestamp
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.identity import Principal
from imagedepot.domain.sharing import ImageMember, MemberStatus
from imagedepot.services.image_sharing import ImageSharingService

MEMBER_SCHEMA: dict[str, Any] = {
    "name": "member",
    "properties": {
        "created_at": {"type": "string", "description": "Date and time of image member creation"},
        "image_id": {"type": "string", "pattern": "^[0-9a-f-]{36}$"},
        "member_id": {"type": "string", "description": "An identifier for the image member"},
        "schema": {"type": "string", "readOnly": True},
        "status": {"type": "string", "enum": [status.value for status in MemberStatus]},
        "updated_at": {"type": "string", "description": "Date and time of last modification"},
    },
}
MEMBERS_SCHEMA: dict[str, Any] = {
    "name": "members",
    "properties": {
        "members": {"type": "array", "items": MEMBER_SCHEMA},
        "schema": {"type": "string"},
    },
    "links": [{"rel": "describedby", "href": "{schema}"}],
}


def member_body(member: ImageMember) -> dict[str, Any]:
    return {
        "created_at": utc_timestamp(member.created_at),
        "image_id": member.image_id,
        "member_id": member.member_id,
        "schema": "/v2/schemas/member",
        "status": member.status.value,
        "updated_at": utc_timestamp(member.updated_at),
    }


def _field(raw: bytes, name: str) -> object:
    body = json_body(raw, allow_empty=True)
    if not isinstance(body, dict) or name not in body:
        raise InvalidInput(f'the body must be a JSON object with "{name}"', field=name)
    return body[name]


@public
async def member_schema(_: Request) -> Response:
    return JSONResponse(MEMBER_SCHEMA)


@public
async def members_schema(_: Request) -> Response:
    return JSONResponse(MEMBERS_SCHEMA)


def member_routes(context: ApiContext) -> list[Route]:
    if context.image_sharing is None:
        return []
    sharing: ImageSharingService = context.image_sharing

    def image_id(request: Request) -> str:
        return str(request.path_params["image_id"])

    def member_id(request: Request) -> str:
        return str(request.path_params["member_id"])

    def list_members(request: Request, _: bytes, principal: Principal) -> Response:
        members = sharing.members(principal, image_id(request))
        return JSONResponse(
            {"members": [member_body(m) for m in members], "schema": "/v2/schemas/members"}
        )

    def add_member(request: Request, raw: bytes, principal: Principal) -> Response:
        member = sharing.add_member(principal, image_id(request), _field(raw, "member"))
        return JSONResponse(member_body(member))

    def show_member(request: Request, _: bytes, principal: Principal) -> Response:
        member = sharing.member(principal, image_id(request), member_id(request))
        return JSONResponse(member_body(member))

    def update_member(request: Request, raw: bytes, principal: Principal) -> Response:
        status = _field(raw, "status")
        member = sharing.set_status(principal, image_id(request), member_id(request), status)
        return JSONResponse(member_body(member))

    def remove_member(request: Request, _: bytes, principal: Principal) -> Response:
        sharing.remove_member(principal, image_id(request), member_id(request))
        return Response(status_code=204)

    gate = context.gate
    collection = {
        "GET": ("ims:member:list", list_members),
        "POST": ("ims:member:create", add_member),
    }
    item = {
        "GET": ("ims:member:get", show_member),
        "PUT": ("ims:member:update", update_member),
        "DELETE": ("ims:member:delete", remove_member),
    }
    base = "/v2/images/{image_id}/members"
    return [
        Route("/v2/schemas/member", member_schema, methods=["GET"]),
        Route("/v2/schemas/members", members_schema, methods=["GET"]),
        Route(base, gate.route(collection, render_error), methods=list(collection)),
        Route(f"{base}/{{member_id}}", gate.route(item, render_error), methods=list(item)),
    ]
