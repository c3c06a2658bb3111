"""The OpenAPI document tells the truth about errors: every operation lists the error answers it
gives, in the one error shape, and the answers the server really gives to unauthenticated,
unpermitted, oversized, malformed and unknown-name requests are among the ones documented."""

from __future__ import annotations

import pytest

from corral.api.auth import PERMISSIONS

#: a value for each path parameter that names nothing in the test workspace
NOTHING = {"name": "nosuchmap", "item_id": "0" * 32, "job_id": "nosuchjob", "lod": "0", "k": "0", "photo_id": "0" * 32, "box_id": "0" * 32}
WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture
def doc(client):
    return client.get("/openapi.json").json()


def operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def documented(op) -> set[int]:
    return {int(s) for s in op["responses"] if s.isdigit()}


def scopes(op) -> set[str]:
    return {p for req in op.get("security", []) for perms in req.values() for p in perms}


def url(path: str, fill: dict[str, str]) -> str:
    for k, v in fill.items():
        path = path.replace("{" + k + "}", v)
    assert "{" not in path, f"no test value for a parameter of {path}"
    return path


def test_every_operation_documents_its_errors_in_the_error_shape(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error", "status"]
    assert "HTTPValidationError" not in schemas, "no route answers in FastAPI's validation-error shape"
    missing = []
    for method, path, op in operations(doc):
        codes = documented(op)
        want = set()
        if op.get("security"):
            want |= {401}
        if "requestBody" in op:
            want |= {408, 413, 422}
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            want |= {404, 422}
        if method in WRITES and op.get("security"):
            want |= {403}
        if not want <= codes:
            missing.append(f"{method.upper()} {path}: lacks {sorted(want - codes)}")
        for status, answer in op["responses"].items():
            if status[0] in "45":
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
                assert answer["description"]
    assert not missing, "\n".join(missing)
    # the routes that need a user say how to sign in, so the try-it page can send a token
    assert set(doc["components"]["securitySchemes"]) == {"token", "session"}
    assert doc["paths"]["/api/health"]["get"].get("security") is None


def test_every_unauthenticated_answer_is_documented(client, doc):
    wrong = []
    for method, path, op in operations(doc):
        r = client.request(method, url(path, NOTHING))
        if r.status_code not in documented(op) or (op.get("security") and r.status_code != 401):
            wrong.append(f"{method.upper()} {path}: {r.status_code} {r.text[:120]}, documented {sorted(documented(op))}")
        if r.status_code >= 400:  # in the documented shape
            assert set(r.json()) == {"error", "status"} and r.json()["status"] == r.status_code, r.text[:200]
    assert not wrong, "\n".join(wrong)


def test_a_role_without_the_permission_gets_the_documented_403(client, doc, curation_ws):
    tried = 0
    for method, path, op in operations(doc):
        lacking = [role for role in ("viewer", "service", "curator") if not all(role in PERMISSIONS[p] for p in scopes(op))]
        if not lacking:
            continue
        body = {"json": {}} if "requestBody" in op else {}
        r = client.request(method, url(path, {**NOTHING, "name": "main"}), headers=curation_ws.auth(lacking[0]), **body)
        assert r.status_code == 403 and 403 in documented(op), f"{method.upper()} {path} as {lacking[0]}: {r.status_code} {r.text[:120]}"
        tried += 1
    assert tried >= 10


def test_bodies_over_the_limit_and_malformed_get_documented_answers(client, doc, curation_ws):
    limit = client.app.state.ctx.settings.max_body_bytes
    tried = 0
    for method, path, op in operations(doc):
        if "requestBody" not in op:
            continue
        headers = {**curation_ws.auth("admin"), "content-type": "application/json"}
        big = client.request(method, url(path, {**NOTHING, "name": "main"}), headers=headers, content=b" " * (limit + 1))
        assert big.status_code == 413 and 413 in documented(op), f"{method.upper()} {path}: {big.status_code}"
        bad = client.request(method, url(path, {**NOTHING, "name": "main"}), headers=headers, content=b"{not json")
        assert bad.status_code in documented(op) and bad.status_code in (400, 401, 422), f"{method.upper()} {path}: {bad.status_code} {bad.text[:120]}"
        tried += 1
    assert tried >= 15


def test_an_unknown_name_in_the_path_gets_the_documented_404(client, doc, curation_ws):
    tried = 0
    for method, path, op in operations(doc):
        if method != "get" or "{" not in path:
            continue
        r = client.get(url(path, NOTHING), headers=curation_ws.auth("admin"))
        assert r.status_code == 404 and 404 in documented(op), f"GET {path}: {r.status_code} {r.text[:120]}"
        tried += 1
    assert tried >= 10
