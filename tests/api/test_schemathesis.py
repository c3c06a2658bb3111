"""Every operation of the OpenAPI document, fuzzed with schemathesis against the real server: no
request, valid or not, may get a server error (5xx), and every one must be answered.

The server runs on loopback on a generated workspace (tests/api/conftest.py) and is asked as an
admin, so that every route's own checks are reached rather than stopped at 401/403. Schemathesis
runs as its users run it (its command line), in two phases per operation: *coverage* (the
boundaries of every input, each input missing, of the wrong type, over its limits) and *fuzzing*
(generated requests, fitting the document and not), a bounded number of each, deterministically so
a run repeats. Routes on a map or an item are fuzzed twice: with generated names, which mostly
stop at "no such map", and with the real map and item, so the checks past that are fuzzed too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import LiveServer, build_curation_ws

pytestmark = pytest.mark.slow

#: generated requests per operation in the fuzzing phase (the coverage phase makes its own set)
EXAMPLES = 25
#: the deadline of one request; one without an answer by then is a failure
REQUEST_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    from corral.api.auth import UserStore

    cur = build_curation_ws(tmp_path_factory.mktemp("fuzz") / "ws", extra_points=200)
    # an admin of its own, whom no generated user name deletes or rotates by chance
    token = UserStore(cur.root).add("fuzz-admin-7f3c", role="admin")
    with LiveServer(cur.root, max_body_bytes=1 << 20) as srv:
        yield srv, token, cur


def _schemathesis(srv: LiveServer, token: str, out: Path, *, parameters: dict[str, object], extra: list[str]) -> dict:
    """Run ``schemathesis run`` against the server; its JSON report."""
    config = out / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in parameters.items()))
    report = out / "report.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run", f"{srv.url}/openapi.json"]
    cmd += ["--checks", "not_a_server_error", "--phases", "coverage,fuzzing", "--max-examples", str(EXAMPLES), "--generation-deterministic"]
    cmd += ["--request-timeout", str(REQUEST_TIMEOUT_S), "--continue-on-failure", "--warnings", "off", "--header", f"Authorization: Bearer {token}"]
    cmd += ["--report", "json", "--report-json-path", str(report), *extra]
    # run in the test's folder: schemathesis keeps a cache of its findings in .schemathesis/ under its working folder
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3000, cwd=out)
    assert report.is_file(), f"schemathesis wrote no report (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    result = json.loads(report.read_text())
    result["output"] = run.stdout[-6000:]
    return result


def _assert_clean(result: dict, *, at_least: int) -> None:
    ops, cases = result["operations"], result["test_cases"]
    summary = f"{ops['tested']} of {ops['total']} operations, {cases['generated']} requests, stopped: {result['stop_reason']}"
    assert result["stop_reason"] == "completed" and ops["tested"] == ops["selected"] >= at_least, f"{summary}\n{result['output']}"
    assert not result["failures"] and not result["errors"] and cases["with_failures"] == 0, f"{summary}\n{result['output']}"
    print(summary)


def test_no_request_to_any_operation_gets_a_server_error(fuzzed_server, tmp_path):
    srv, token, _ = fuzzed_server
    # the event stream holds a request open for `timeout` seconds (up to 300): keep it short
    result = _schemathesis(srv, token, tmp_path, parameters={"query.timeout": 1}, extra=[])
    _assert_clean(result, at_least=40)


def test_no_request_on_the_real_map_and_item_gets_a_server_error(fuzzed_server, tmp_path):
    srv, token, cur = fuzzed_server
    result = _schemathesis(srv, token, tmp_path, parameters={"path.name": cur.map_name, "path.item_id": cur.image_ids[0]}, extra=["--include-path-regex", r"^/api/(maps/\{name\}|items/\{item_id\})"])
    _assert_clean(result, at_least=25)
    # the real names were used: the map's and the item's reads answered (not only "no such map")
    accepted = {op: rates.get("fuzzing", {}).get("accepted", 0) for op, rates in result["valid_rates"].items()}
    assert accepted["GET /api/maps/{name}/clusters"] > 0 and accepted["GET /api/items/{item_id}"] > 0, accepted
