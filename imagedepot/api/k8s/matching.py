"""ImageSnapshotMatch: the create-only resource that asks which available snapshot best
covers a pod's images (from its spec or the pod annotations CCI reads), and may reject the
pod or start building a snapshot when none does. It answers a question rather than storing
an object, so it has its own parsing and route apart from the ImageSnapshot resource.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.names import API_VERSION
from imagedepot.api.k8s.objects import (
    FIELD_NAMES,
    IMAGES_MAX,
    check_content_type,
    load_json,
    parse_object,
    suffix,
)
from imagedepot.api.k8s.status import Cause, StatusError, bad_request, render_error
from imagedepot.domain.caches import CacheStatus
from imagedepot.domain.errors import Conflict, InvalidInput
from imagedepot.domain.identity import Principal
from imagedepot.domain.matching import Candidate, Strategy, best_match, coverage, normalise

MATCH_KIND, MATCH_PLURAL = "ImageSnapshotMatch", "imagesnapshotmatches"
_ANNOTATION = "cci.io/image-snapshot-"


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise StatusError(
        422, f"{where} must be true or false", causes=[Cause(where, "must be a bool")]
    )


@dataclass(frozen=True)
class MatchQuestion:
    images: tuple[str, ...]
    strategy: Strategy
    auto_match: bool
    name: str | None
    reject: bool
    create: bool


def parse_match(body: Any) -> MatchQuestion:
    """An ImageSnapshotMatch: spec fields, or the pod annotations CCI reads, spec winning."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object (an {MATCH_KIND})")
    if body.get("kind") not in (None, MATCH_KIND):
        raise bad_request(f"kind {body.get('kind')!r} is not {MATCH_KIND}")
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    annotations: dict[str, Any] = notes if isinstance(notes, dict) else {}
    raw_spec = body.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}

    def pick(key: str, annotation: str, default: Any) -> tuple[Any, str]:
        if key in spec:
            return spec[key], f"spec.{key}"
        if _ANNOTATION + annotation in annotations:
            where = f"metadata.annotations[{_ANNOTATION}{annotation}]"
            return annotations[_ANNOTATION + annotation], where
        return default, f"spec.{key}"

    raw_images = spec.get("images")
    if not isinstance(raw_images, list) or not raw_images:
        raise StatusError(
            422,
            "spec.images: Required value",
            causes=[Cause("spec.images", "Required value", "FieldValueRequired")],
        )
    images: list[str] = []
    for index, item in enumerate(raw_images):
        image = item.get("image") if isinstance(item, dict) else item
        where = f"spec.images[{index}]"
        if not isinstance(image, str):
            raise StatusError(422, f"{where} must be an image", causes=[Cause(where, "invalid")])
        try:
            normalise(image, where)
        except InvalidInput as error:
            raise StatusError(422, error.message, causes=[Cause(where, error.message)]) from None
        images.append(image)
    strategy_value, where = pick("strategy", "usage-strategy", "size")
    try:
        strategy = Strategy(strategy_value)
    except ValueError:
        message = f"must be size or quantity, got {strategy_value!r}"
        raise StatusError(
            422, f"{where}: {message}", causes=[Cause(where, message, "FieldValueNotSupported")]
        ) from None
    name, _ = pick("snapshotName", "specified-name", None)
    auto_value, auto_where = pick("autoMatch", "auto-match", None)
    auto = None if auto_value is None else _flag(auto_value, auto_where)
    if name and auto:
        raise bad_request(
            "a specified snapshot name and auto-match exclude each other; ask for one"
        )
    reject_value, reject_where = pick("rejectIfNotAvailable", "reject-if-not-available", False)
    create_value, create_where = pick("createIfNotPresent", "create-if-not-present", False)
    return MatchQuestion(
        images=tuple(images),
        strategy=strategy,
        auto_match=not name if auto is None else auto,
        name=name if isinstance(name, str) and name else None,
        reject=_flag(reject_value, reject_where),
        create=_flag(create_value, create_where),
    )


def match_routes(context: ApiContext) -> list[Route]:
    caches = context.caches

    def answer(body: Any, result: str, candidate: Candidate | None, message: str) -> dict[str, Any]:
        status: dict[str, Any] = {"result": result, "message": message}
        if candidate is not None:
            status.update(
                snapshotName=candidate.cache.spec.name,
                snapshotUID=candidate.cache.id,
                coveredImages=list(candidate.covered),
                coveredBytes=candidate.covered_bytes,
            )
        shown = dict(body)
        shown.update(apiVersion=API_VERSION, kind=MATCH_KIND, status=status)
        shown.setdefault("metadata", {})
        return shown

    def create_match(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        body = load_json(raw)
        question = parse_match(body)
        assert isinstance(body, dict)
        if question.name is not None:
            found = caches.list(principal, question.name)
            usable = [c for c in found if c.status is CacheStatus.AVAILABLE]
            if usable:
                candidate = coverage(usable[0], question.images)
                shown = answer(body, "Matched", candidate, "the specified snapshot is available")
                return JSONResponse(shown, status_code=201)
            why = f'snapshot "{question.name}" is ' + (
                f"{found[0].status.value}" if found else "not found"
            )
            result = "Rejected" if question.reject else "NotMatched"
            return JSONResponse(answer(body, result, None, why), status_code=201)
        best = best_match(caches.list(principal), question.images, question.strategy)
        if best is not None:
            message = f"covers {len(best.covered)} of {len(question.images)} images"
            return JSONResponse(answer(body, "Matched", best, message), status_code=201)
        if question.create:
            context.gate.identity.authorize(principal, "cci:imagesnapshot:create")
            registries = (
                body["spec"].get("registries", []) if isinstance(body.get("spec"), dict) else []
            )
            parsed = parse_object(
                {
                    "metadata": {"generateName": "auto-"},
                    "spec": {
                        "images": [{"image": image} for image in question.images],
                        "registries": registries,
                    },
                }
            )
            for _ in range(5):
                spec = replace(parsed.spec, name=f"auto-{suffix()}")
                try:
                    cache = caches.create(
                        principal, spec, max_images=IMAGES_MAX, field_names=FIELD_NAMES
                    )
                except InvalidInput as error:
                    # A pull secret the project does not hold: the match body named it.
                    where = error.field or "spec.registries"
                    message = error.message.removeprefix(f"{where}: ")
                    raise StatusError(
                        422,
                        f"{MATCH_KIND} is invalid: {where}: {message}",
                        causes=[Cause(where, message, "FieldValueNotFound")],
                    ) from None
                except Conflict as error:
                    if error.field == "name":
                        continue
                    raise
                context.notify_worker()
                candidate = Candidate(cache, (), 0)
                message = "no snapshot covered the images; one is being built"
                return JSONResponse(answer(body, "Created", candidate, message), status_code=201)
        result = "Rejected" if question.reject else "NotMatched"
        message = "no available snapshot holds any of the images"
        return JSONResponse(answer(body, result, None, message), status_code=201)

    actions = {"POST": ("cci:imagesnapshotmatch:create", create_match)}
    return [
        Route(
            f"/apis/{API_VERSION}/{MATCH_PLURAL}",
            context.gate.route(actions, render_error),
            methods=["POST"],
        )
    ]
