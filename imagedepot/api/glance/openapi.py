"""The OpenAPI 3.0 description of the Glance v2 dialect, published at `/v2/openapi.json`.

Glance publishes JSON Schemas of its objects (`/v2/schemas/…`, in `schemas`), which openstacksdk
reads, but no description of its calls; this one lets users generate clients for what this
server answers and lets the tests hold the server to it with schemathesis. It covers every
route of the package: the version documents, the schemas, images (list with its filters and
both sort spellings, create, show, both json-patch dialects, delete), image data (upload,
staging, import, download with ranges), (de)activation, tags and members, with the bounds the
domain enforces and every status code each answers in Glance's `{"error": {…}}` body.
"""

from __future__ import annotations

from typing import Any

from imagedepot.api.glance.images import PATCH_V20, PATCH_V21
from imagedepot.api.openapi import (
    SECURITY,
    SECURITY_SCHEMES,
    error_responses,
    nullable,
    operation,
    path_parameter,
    pattern,
    prop,
    query_parameter,
    ref,
    response,
)
from imagedepot.api.wire import JSON_INTEGER_MAX
from imagedepot.domain.sharing import MemberStatus
from imagedepot.domain.vmimages import (
    COMPARISONS,
    CONTAINER_FORMATS,
    DISK_FORMATS,
    INTEGER_MAX,
    NAME_MAX,
    PROPERTY_VALUE_MAX,
    SORT_KEYS,
    TAG_MAX,
    UUID_RE,
    ImageStatus,
    Visibility,
)

OPENAPI_PATH = "/v2/openapi.json"


def _image_properties() -> dict[str, Any]:
    return {
        "id": prop("string", "The image's UUID."),
        "name": nullable("string", "The image's name.", maxLength=NAME_MAX),
        "status": prop("string", "Where the image is.", enum=[s.value for s in ImageStatus]),
        "visibility": prop("string", "Who sees it.", enum=[v.value for v in Visibility]),
        "protected": prop("boolean", "A protected image cannot be deleted."),
        "os_hidden": prop("boolean", "Left out of lists unless asked for."),
        "checksum": nullable("string", "MD5 of the data."),
        "os_hash_algo": nullable("string", "sha512 once there is data."),
        "os_hash_value": nullable("string", "The data's hash."),
        "owner": nullable("string", "The owning project."),
        "size": nullable("integer", "Bytes of data.", format="int64"),
        "virtual_size": nullable("integer", "Bytes of the disk it holds.", format="int64"),
        "min_ram": prop("integer", "MiB of RAM it needs.", format="int64"),
        "min_disk": prop("integer", "GiB of disk it needs.", format="int64"),
        "disk_format": nullable("string", "The disk format."),
        "container_format": nullable("string", "The container format."),
        "created_at": prop("string", "When it was created.", format="date-time"),
        "updated_at": prop("string", "When it last changed.", format="date-time"),
        "tags": prop("array", "Its tags.", items={"type": "string"}),
        "self": prop("string", "Its path."),
        "file": prop("string", "Its data's path."),
        "schema": prop("string", "/v2/schemas/image."),
    }


def _schemas() -> dict[str, Any]:
    integer = {"type": "integer", "format": "int64", "minimum": 0, "maximum": INTEGER_MAX}
    properties = _image_properties()
    image = {
        "type": "object",
        "description": "An image; extra properties are strings.",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": {"type": "string"},
    }
    link = {
        "type": "object",
        "required": ["href", "rel"],
        "properties": {
            "href": {"type": "string"},
            "rel": {"type": "string", "enum": ["self", "bookmark", "alternate"]},
            "type": {"type": "string"},
        },
    }
    listed = {
        **image,
        "required": [*properties, "links"],
        "properties": {
            **properties,
            "links": prop("array", "The seed's (Nova's) links.", items=link),
        },
    }
    member = {
        "type": "object",
        "required": ["created_at", "image_id", "member_id", "schema", "status", "updated_at"],
        "properties": {
            "created_at": {"type": "string", "format": "date-time"},
            "image_id": {"type": "string"},
            "member_id": {"type": "string"},
            "schema": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in MemberStatus]},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "Image": image,
        "ImageList": {
            "type": "object",
            "required": ["images", "first", "schema"],
            "properties": {
                "images": {"type": "array", "items": listed},
                "first": prop("string", "The first page."),
                "next": prop("string", "The next page, whenever this one is full."),
                "schema": prop("string", "/v2/schemas/images."),
            },
        },
        "ImageCreate": {
            "type": "object",
            "description": "What a create may set; any other key is a string property. "
            "Read-only and reserved keys (status, size, owner, …) are refused with 403.",
            "properties": {
                "id": prop("string", "A UUID of the caller's choice.", pattern=pattern(UUID_RE)),
                "name": nullable("string", "A name.", maxLength=NAME_MAX),
                "visibility": prop("string", "Who sees it.", enum=[v.value for v in Visibility]),
                "protected": prop("boolean", "Cannot be deleted while true."),
                "os_hidden": prop("boolean", "Left out of lists unless asked for."),
                "min_ram": {**integer, "description": "MiB of RAM it needs."},
                "min_disk": {**integer, "description": "GiB of disk it needs."},
                "disk_format": nullable("string", "The disk format.", enum=list(DISK_FORMATS)),
                "container_format": nullable(
                    "string", "The container format.", enum=list(CONTAINER_FORMATS)
                ),
                "tags": prop(
                    "array",
                    "Tags.",
                    items={"type": "string", "minLength": 1, "maxLength": TAG_MAX},
                ),
            },
            "additionalProperties": {"type": "string", "maxLength": PROPERTY_VALUE_MAX},
        },
        "PatchV21": {
            "type": "array",
            "description": f"{PATCH_V21}: RFC 6902 operations on one attribute each.",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {"type": "string", "enum": ["add", "replace", "remove"]},
                    "path": {"type": "string", "pattern": "^/[^/]+$"},
                    "value": {},
                },
            },
        },
        "PatchV20": {
            "type": "array",
            "description": f"{PATCH_V20}: each operation names its path under its verb.",
            "items": {
                "type": "object",
                "minProperties": 1,
                "properties": {
                    "add": {"type": "string", "pattern": "^/[^/]+$"},
                    "replace": {"type": "string", "pattern": "^/[^/]+$"},
                    "remove": {"type": "string", "pattern": "^/[^/]+$"},
                    "value": {},
                },
            },
        },
        "Member": member,
        "MemberList": {
            "type": "object",
            "required": ["members", "schema"],
            "properties": {
                "members": {"type": "array", "items": member},
                "schema": {"type": "string"},
            },
        },
        "VersionList": {
            "type": "object",
            "required": ["versions"],
            "properties": {
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "status", "links"],
                        "properties": {
                            "id": {"type": "string"},
                            "status": {"type": "string", "enum": ["CURRENT", "SUPPORTED"]},
                            "links": {"type": "array", "items": link},
                        },
                    },
                }
            },
        },
        "Error": {
            "type": "object",
            "description": "The body of every error.",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "title", "message"],
                    "properties": {
                        "code": prop("integer", "The HTTP status."),
                        "title": prop("string", "The status's phrase."),
                        "message": prop("string", "What went wrong, naming the field."),
                    },
                }
            },
        },
    }


def _public(summary: str, operation_id: str, success: dict[str, Any]) -> dict[str, Any]:
    """A document anyone may read: no credential, nothing refused but other methods."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "security": [],
        "responses": {**success, **error_responses([405], ref("Error"))},
    }


def _list_parameters() -> list[dict[str, Any]]:
    count = {"type": "integer", "format": "int64", "minimum": 0, "maximum": JSON_INTEGER_MAX}
    time_filter = {"type": "string", "pattern": f"^({'|'.join(COMPARISONS)}):.+$"}
    in_list = "A value, or in:a,b,c for any of several."
    sort_dir = {"type": "string", "enum": ["asc", "desc"]}
    return [
        query_parameter("limit", count, "Items per page (25; more than 1000 is 1000)."),
        query_parameter(
            "marker", {"type": "string"}, "The id of the last image of the previous page."
        ),
        query_parameter(
            "sort_key", {"type": "string", "enum": SORT_KEYS}, "Sort by this key (repeatable)."
        ),
        query_parameter("sort_dir", sort_dir, "asc or desc (one, or one per sort_key)."),
        query_parameter(
            "sort-key", {"type": "string", "enum": SORT_KEYS}, "The seed's spelling of sort_key."
        ),
        query_parameter("sort-dir", sort_dir, "The seed's spelling of sort_dir."),
        query_parameter(
            "sort",
            {"type": "string", "pattern": f"^({'|'.join(SORT_KEYS)})(:(asc|desc))?$"},
            "key:dir,key:dir (not with sort_key / sort_dir).",
        ),
        query_parameter("id", {"type": "string"}, in_list),
        query_parameter("name", {"type": "string"}, in_list),
        query_parameter("status", {"type": "string"}, f"{in_list} Image statuses."),
        query_parameter("disk_format", {"type": "string"}, in_list),
        query_parameter("container_format", {"type": "string"}, in_list),
        query_parameter("owner", {"type": "string"}, "Only this project's images."),
        query_parameter(
            "tag", {"type": "string"}, "Only images with this tag (repeatable: all of them)."
        ),
        query_parameter(
            "visibility",
            {"type": "string", "enum": ["all", *[v.value for v in Visibility]]},
            "Only these; hidden and others' private images never show.",
        ),
        query_parameter("protected", {"type": "boolean"}, "true or false."),
        query_parameter(
            "os_hidden", {"type": "boolean"}, "true lists hidden images (else left out)."
        ),
        query_parameter("size_min", count, "At least this many bytes."),
        query_parameter("size_max", count, "At most this many bytes."),
        query_parameter("created_at", time_filter, "OPERATOR:ISO-8601-TIME."),
        query_parameter("updated_at", time_filter, "OPERATOR:ISO-8601-TIME."),
        query_parameter(
            "changes-since", {"type": "string"}, "Changed since this ISO 8601 time (the seed)."
        ),
        query_parameter(
            "type",
            {"type": "string", "enum": ["snapshot", "server", "image", "base", "all"]},
            "The seed's snapshot filter: snapshot (or server), image (or base), all.",
        ),
        query_parameter(
            "member_status",
            {"type": "string", "enum": ["all", *[s.value for s in MemberStatus]]},
            "Shared images by the caller's membership status.",
        ),
    ]


def openapi_document() -> dict[str, Any]:
    image = response("The image.", ref("Image"))
    no_content = {"204": response("Done.")}
    image_id = path_parameter("image_id", "The image's UUID.")
    member_id = path_parameter("member_id", "The member's project id.")
    tag = path_parameter("tag", "A tag.")
    data = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    declared_size = {
        "name": "X-OpenStack-Image-Size",
        "in": "header",
        "description": "The size of the data about to be sent; more or less is refused.",
        "schema": {"type": "integer", "format": "int64", "minimum": 0},
    }
    data_errors = (404, 409, 413, 415)
    member_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["member"],
                    "properties": {"member": prop("string", "The project to share with.")},
                }
            }
        },
    }
    status_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": prop(
                            "string",
                            "The caller's answer to the share.",
                            enum=[s.value for s in MemberStatus],
                        )
                    },
                }
            }
        },
    }
    schema_document = {"type": "object", "required": ["name", "properties"]}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "imagedepot Glance v2",
            "version": "v2",
            "description": "OpenStack Glance v2 images as openstacksdk and the seed's Nova-style "
            "snapshot list use them. Every response carries X-Request-Id.",
        },
        "paths": {
            "/": {
                "get": _public(
                    "The API versions (300 Multiple Choices, as Glance answers)",
                    "ListVersionsAtRoot",
                    {"300": response("The versions.", ref("VersionList"))},
                )
            },
            "/versions": {
                "get": _public(
                    "The API versions",
                    "ListVersions",
                    {"200": response("The versions.", ref("VersionList"))},
                )
            },
            **{
                f"/v2/schemas/{name}": {
                    "get": _public(
                        f"The JSON Schema of {'a list of ' if name.endswith('s') else 'an '}"
                        f"{name.rstrip('s')}",
                        f"Show{name.capitalize()}Schema",
                        {"200": response("A JSON Schema.", schema_document)},
                    )
                }
                for name in ("image", "images", "member", "members")
            },
            "/v2/info/import": {
                "get": _public(
                    "The import methods",
                    "ShowImportInfo",
                    {"200": response("The methods.", {"type": "object"})},
                )
            },
            "/v2/images": {
                "get": operation(
                    "GET",
                    "List the images the caller sees (its own, public, shared with it)",
                    "ListImages",
                    {"200": response("A page of images.", ref("ImageList"))},
                    parameters=_list_parameters(),
                ),
                "post": operation(
                    "POST",
                    "Create an image (queued, without data)",
                    "CreateImage",
                    {
                        "201": response(
                            "Created.",
                            ref("Image"),
                            headers={
                                "Location": {"schema": {"type": "string"}, "required": True},
                                "OpenStack-image-import-methods": {"schema": {"type": "string"}},
                            },
                        )
                    },
                    409,
                    body={
                        "required": False,
                        "content": {"application/json": {"schema": ref("ImageCreate")}},
                    },
                ),
            },
            "/v2/images/{image_id}": {
                "parameters": [image_id],
                "get": operation("GET", "Show an image", "ShowImage", {"200": image}, 404),
                "patch": operation(
                    "PATCH",
                    "Change an image with a json-patch (either of Glance's two media types)",
                    "UpdateImage",
                    {"200": image},
                    404,
                    409,
                    415,
                    body={
                        "required": True,
                        "content": {
                            PATCH_V21: {"schema": ref("PatchV21")},
                            PATCH_V20: {"schema": ref("PatchV20")},
                        },
                    },
                ),
                "delete": operation(
                    "DELETE",
                    "Delete an image (403 when protected)",
                    "DeleteImage",
                    no_content,
                    404,
                    409,
                ),
            },
            "/v2/images/{image_id}/file": {
                "parameters": [image_id],
                "get": operation(
                    "GET",
                    "Download the image's data (a single Range is honoured)",
                    "DownloadImage",
                    {
                        "200": response(
                            "The data.",
                            {"type": "string", "format": "binary"},
                            media_type="application/octet-stream",
                            headers={"Content-MD5": {"schema": {"type": "string"}}},
                        ),
                        "204": response("The image has no data."),
                        "206": response(
                            "The range asked for.",
                            {"type": "string", "format": "binary"},
                            media_type="application/octet-stream",
                        ),
                        "416": response("The range is outside the data."),
                    },
                    404,
                ),
                "put": operation(
                    "PUT",
                    "Upload the image's data (once, while queued; it becomes active)",
                    "UploadImage",
                    no_content,
                    *data_errors,
                    body=data,
                    parameters=[declared_size],
                ),
            },
            "/v2/images/{image_id}/stage": {
                "parameters": [image_id],
                "put": operation(
                    "PUT",
                    "Stage the image's data for a glance-direct import",
                    "StageImage",
                    no_content,
                    *data_errors,
                    body=data,
                    parameters=[declared_size],
                ),
            },
            "/v2/images/{image_id}/import": {
                "parameters": [image_id],
                "post": operation(
                    "POST",
                    "Import the staged data (glance-direct)",
                    "ImportImage",
                    {"202": response("Accepted.")},
                    404,
                    409,
                    body={
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "method": {
                                            "type": "object",
                                            "properties": {"name": {"type": "string"}},
                                        }
                                    },
                                }
                            }
                        },
                    },
                ),
            },
            **{
                f"/v2/images/{{image_id}}/actions/{verb}": {
                    "parameters": [image_id],
                    "post": operation(
                        "POST",
                        f"{verb.capitalize()} an image",
                        f"{verb.capitalize()}Image",
                        no_content,
                        404,
                        409,
                    ),
                }
                for verb in ("deactivate", "reactivate")
            },
            "/v2/images/{image_id}/tags/{tag}": {
                "parameters": [image_id, tag],
                "put": operation("PUT", "Add a tag", "AddTag", no_content, 404, 409),
                "delete": operation("DELETE", "Remove a tag", "RemoveTag", no_content, 404, 409),
            },
            "/v2/images/{image_id}/members": {
                "parameters": [image_id],
                "get": operation(
                    "GET",
                    "List an image's members",
                    "ListMembers",
                    {"200": response("The members.", ref("MemberList"))},
                    404,
                ),
                "post": operation(
                    "POST",
                    "Share an image with a project",
                    "AddMember",
                    {"200": response("The member, pending.", ref("Member"))},
                    404,
                    409,
                    body=member_body,
                ),
            },
            "/v2/images/{image_id}/members/{member_id}": {
                "parameters": [image_id, member_id],
                "get": operation(
                    "GET",
                    "Show a member",
                    "ShowMember",
                    {"200": response("The member.", ref("Member"))},
                    404,
                ),
                "put": operation(
                    "PUT",
                    "Accept or reject a share (the member itself)",
                    "UpdateMember",
                    {"200": response("The member.", ref("Member"))},
                    404,
                    409,
                    body=status_body,
                ),
                "delete": operation(
                    "DELETE", "Stop sharing with a project", "RemoveMember", no_content, 404, 409
                ),
            },
        },
        "components": {"schemas": _schemas(), "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }
