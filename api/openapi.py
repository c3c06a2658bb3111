"""The error answers in the OpenAPI document, written in one place.

FastAPI documents a route's success and a 422 in its own validation-error shape. Corral's routes
answer more than that, and every error in one shape (``{"error": ..., "status": ...}``, see
:mod:`corral.api.errors`). :func:`document_errors` adds the answers to each operation of the
generated document from what the document already says about it, so a new route is documented by
the same rules:

- it names a security scheme (it depends on the signed-in user): 401; with a permission (the
  scheme's scopes): 403 when some role lacks it, and on writes, which a cookie may sign only with
  ``X-Corral-Request``;
- it takes a body: 413 (over the route's limit), 408 (too slow to arrive), 422 (not the expected
  JSON); without a security scheme the request guard still answers 401 to a body sent without
  credentials, except on the public sign-in route;
- its body carries the map's ``etag`` or a ``labels_version``: 409 when the map or labels moved on;
- it takes path parameters: 404 (nothing by that name); any parameter or body: 400 (a value the
  route refuses) and 422 (a value of the wrong type or range);
- it writes (any method but GET and HEAD, less :data:`READS`): 503 (read-only workspace) and 507
  (full disk).

The answers only one route gives are in :data:`ROUTE_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from corral.api.auth import PERMISSIONS, ROLES

#: the component every error answer refers to
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "description": "Every error answer: a short message (never a traceback) and the HTTP status.",
    "properties": {"error": {"type": "string", "description": "what went wrong and, where it can, what to do"}, "status": {"type": "integer", "description": "the HTTP status"}},
    "required": ["error", "status"],
}
ERROR_REF = "#/components/schemas/Error"

#: what each status means, as the document says it
MEANING = {
    400: "A value the route refuses (the message names the field and what to do)",
    401: "Not signed in: no token or session, or one that is unknown, revoked or expired",
    403: "The user's role may not do this, or a cookie-authenticated write lacks 'X-Corral-Request: 1'",
    404: "Nothing by that name",
    408: "The body did not arrive in time (body_timeout_s)",
    409: "The map or the labels changed since the request's view of them: reload and retry",
    410: "Gone: the item's original file changed since it was embedded",
    413: "The body is over the route's limit (max_body_bytes; uploads max_request_bytes)",
    415: "A body of a content type the route does not take",
    422: "A value of the wrong type, size or range, or a body that is not the expected JSON",
    429: "Too many failed sign-ins: wait the seconds Retry-After says",
    501: "This installation lacks the optional part the route needs",
    503: "The workspace is read-only (or the service is not ready): the same request works later",
    507: "The workspace's disk is full",
}

#: routes that take a body but write nothing to the workspace
READS = {"POST /api/maps/{name}/points", "POST /api/maps/{name}/split", "POST /api/maps/{name}/suggest", "POST /api/recognize"}
#: routes with a body that the request guard lets through unauthenticated
PUBLIC_BODIES = {"POST /api/session", "POST /api/signin"}
#: answers only one route gives
ROUTE_ERRORS: dict[str, dict[int, str]] = {
    "POST /api/session": {401: "Unknown or revoked token"},
    "POST /api/signin": {401: "Wrong name or password", 429: MEANING[429]},
    "POST /api/me/password": {403: "The current password is wrong, or a cookie-authenticated change lacks 'X-Corral-Request: 1'", 429: MEANING[429]},
    "DELETE /api/sessions": {403: "A cookie-authenticated sign-out everywhere lacks 'X-Corral-Request: 1'"},
    "GET /api/operations": {403: "Only admins read other users' operations", 503: "The operation log is behind, or this server keeps none (Retry-After)"},
    "POST /api/jobs": {409: "Another job is running", 503: "The server cannot start a job now, or the workspace is read-only"},
    # it reads its body itself (images, JSON, float32 or .npy vectors), so the document shows none
    "POST /api/recognize": {
        400: MEANING[400],
        408: MEANING[408],
        409: "The index cannot answer this request (regions without a detector, vectors of another dimension)",
        413: MEANING[413],
        415: MEANING[415],
        422: MEANING[422],
        503: "No index is loaded yet, or the server is decoding as many images as its memory allows (Retry-After)",
    },
    "GET /api/items/{item_id}/thumb": {503: "The server is decoding as many images as its memory allows: retry after Retry-After"},
    "GET /api/items/{item_id}/image": {410: MEANING[410], 503: "The server is decoding as many images as its memory allows: retry after Retry-After"},
    "POST /api/maps/{name}/split": {501: "Re-clustering needs corral.pipeline.mapping"},
    # box revisions (api/routes/photos.py): 409 when the photo was revised since the client's ``base``
    "POST /api/photos/{photo_id}/boxes/{box_id}/delete": {409: "The photo's boxes were revised since the version the request saw: reload it"},
    "POST /api/photos/{photo_id}/boxes/{box_id}/name": {409: "The photo's boxes were revised since the version the request saw: reload it"},
    "POST /api/photos/{photo_id}/boxes/{box_id}/adjust": {
        409: "The photo's boxes were revised since the version the request saw: reload it",
        410: "The photo cannot be read now (moved, deleted or changed): its boxes are left as they are",
        503: "The box cannot be embedded on this server (the embedding set's model or weights are missing here), or the workspace is read-only",
    },
    "POST /api/photos/{photo_id}/boxes": {
        409: "The photo's boxes were revised since the version the request saw: reload it",
        410: "The photo cannot be read now (moved, deleted or changed): its boxes are left as they are",
        503: "The box cannot be embedded on this server (the embedding set's model or weights are missing here), or the workspace is read-only",
    },
    "POST /api/photos/undo": {400: "Nothing to undo"},
    "POST /api/photos/redo": {400: "Nothing to redo"},
}

_WRITE_METHODS = {"post", "put", "patch", "delete"}


def errors_of(key: str, op: dict[str, Any], schemas: dict[str, Any], route_errors: dict[str, dict[int, str]] | None = None) -> dict[int, str]:
    """The error answers of the operation ``op`` (``key`` is ``"METHOD /path"``), by the rules of
    the module docstring, plus those ``route_errors`` (by default :data:`ROUTE_ERRORS`) lists."""
    method = key.split(" ", 1)[0].lower()
    out: dict[int, str] = {}
    security = op.get("security") or []
    has_body = "requestBody" in op
    params = op.get("parameters") or []
    if security or (has_body and key not in PUBLIC_BODIES):
        out[401] = MEANING[401]
    needs = {perm for req in security for scopes in req.values() for perm in scopes}
    if needs and (method in _WRITE_METHODS or any(PERMISSIONS.get(p, frozenset()) != frozenset(ROLES) for p in needs)):
        out[403] = MEANING[403]
    if any(p.get("in") == "path" for p in params):
        out[404] = MEANING[404]
    if params or has_body:
        out[400] = MEANING[400]
        out[422] = MEANING[422]
    if has_body:
        out[408] = MEANING[408]
        out[413] = MEANING[413]
        if _body_fields(op, schemas) & {"etag", "labels_version"}:
            out[409] = MEANING[409]
    if method in _WRITE_METHODS and key not in READS:
        out[503] = MEANING[503]
        out[507] = MEANING[507]
    out.update((ROUTE_ERRORS if route_errors is None else route_errors).get(key, {}))
    return out


def _body_fields(op: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The top-level field names of the operation's JSON body."""
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
    return set(schema.get("properties", {}))


def document_errors(doc: dict[str, Any], route_errors: dict[str, dict[int, str]] | None = None) -> dict[str, Any]:
    """Add every operation's error answers, each with the error body's schema, to ``doc`` (in place;
    doing it twice changes nothing) and return it. FastAPI's own validation-error shapes go: no
    route answers in them."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            for status, meaning in errors_of(f"{method.upper()} {path}", op, schemas, route_errors).items():
                responses.setdefault(str(status), {})["description"] = meaning
            for status, answer in responses.items():
                if status[:1] in "45":
                    answer.setdefault("description", MEANING.get(int(status), "Error"))
                    answer["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
            op["responses"] = dict(sorted(responses.items()))
    schemas["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def install_openapi(app: FastAPI, *, route_errors: dict[str, dict[int, str]] | None = None) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) return the document with
    its error answers; ``route_errors`` adds to :data:`ROUTE_ERRORS` for this app."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    errors = {**ROUTE_ERRORS, **(route_errors or {})}

    def openapi() -> dict[str, Any]:
        return document_errors(generate(), errors)

    app.openapi = openapi  # type: ignore[method-assign]
