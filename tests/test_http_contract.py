"""Both services' HTTP APIs against their OpenAPI documents: served = checked in, and fuzzed by schemathesis.

* ``docs/openapi/ingest.json`` and ``docs/openapi/learner.json`` are what the apps serve at
  ``/openapi.json`` (regenerate with ``python -m sketchgen.openapi_docs``) — checked on the files and
  on real running services;
* the operations that declare a security requirement are exactly those the bearer-token middleware
  (:class:`~service_http.auth.BearerAuth`, both token sets configured) answers 401 without a token, each
  with the scheme whose token lets it through, and a documented 401;
* schemathesis (its Python API) generates requests for every operation of each document, valid and
  invalid, against a real learner (a :class:`LearnerService` training on a real Redis stream with
  records, a model served) and a real ``sketchgen ingest`` process (real Kafka and Redis, ready): no
  answer is a 5xx, and every answer's status, content type, headers and body conform to the document.
  The learner's sampling operations may also answer 429 (documented): the fuzzer's requests overlap
  nothing, but the bound is part of the contract.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service_http.auth import BearerAuth, HttpAuth
from service_http.openapi import dumps
from service_http.openapi_security import API_SCHEME, METRICS_SCHEME
from sketchgen.openapi_docs import DOCS, documents
from sketchgen.produce import ensure_topic
from tests.auth_helpers import concrete
from tests.processes import fetch, wait_for
from tests.test_ingest_health import Worker, ready
from tests.test_ingest_health import new_stream as new_ingest_stream
from tests.test_learner_checkpoints import new_stream, running

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

#: Examples generated per operation (valid and invalid parameters); about a minute for both services.
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def test_the_checked_in_documents_are_the_apps_own():
    for name, document in documents().items():
        path = DOCS / f"{name}.json"
        assert path.read_text() == dumps(document), f"{path} is stale: run python -m sketchgen.openapi_docs"


def middleware_status(auth: HttpAuth, path: str, token: str | None) -> int:
    """The status :class:`BearerAuth` answers a GET of ``path`` with (200: passed to the app behind it)."""
    sent: list[int] = []

    async def app(scope, receive, send) -> None:
        sent.append(200)

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers, "query_string": b""}
    asyncio.run(BearerAuth(app, auth)(scope, receive, send))
    return sent[0]


def test_the_documents_declare_exactly_what_the_middleware_guards(tmp_path: Path):
    (tmp_path / "api").write_text("api-token-123\n")
    (tmp_path / "metrics").write_text("metrics-token-456\n")
    auth = HttpAuth.from_files(str(tmp_path / "api"), str(tmp_path / "metrics"))
    tokens = {API_SCHEME: "api-token-123", METRICS_SCHEME: "metrics-token-456"}
    declared, guarded = set(), set()
    for name, document in documents().items():
        assert set(document["components"]["securitySchemes"]) == set(tokens), name
        for path, item in document["paths"].items():
            for method, operation in item.items():
                label = f"{name} {method.upper()} {path}"
                security = operation["security"]
                url = concrete(path, operation)
                if middleware_status(auth, url, None) == 401:
                    guarded.add(label)
                if security == []:
                    assert "401" not in operation["responses"], label
                    continue
                declared.add(label)
                assert len(security) == 2 and security[0] == {}, (label, security)  # optional: auth is off by default
                (scheme,) = security[1]
                assert middleware_status(auth, url, tokens[scheme]) == 200, label
                other = next(t for s, t in tokens.items() if s != scheme)
                assert middleware_status(auth, url, other) == 401, label
                unauthorized = operation["responses"]["401"]
                assert "WWW-Authenticate" in unauthorized["headers"], label
                assert unauthorized["content"]["application/json"]["schema"]["required"] == ["error"], label
    assert declared == guarded
    assert {"learner GET /status", "learner GET /sample", "learner GET /metrics", "ingest GET /metrics"} <= declared
    assert not {"learner GET /", "learner GET /static/{name}", "ingest GET /healthz"} & declared


def served_document(port: int) -> str:
    code, body = fetch(port, "/openapi.json")
    assert code == 200
    return dumps(json.loads(body))


def describe_lambdas_near_the_stack_top() -> None:
    """Have Hypothesis parse schemathesis' JSON-schema strategy module once, from a shallow stack.

    Hypothesis describes a strategy's lambdas by parsing their module with :func:`ast.parse`; on this
    CPython 3.11 that parse can fail ("SystemError: AST constructor recursion depth mismatch") when
    called hundreds of frames deep, as it is while validating a nested negative-case strategy. The
    parsed module is cached, so parsing it here first avoids the deep call.
    """
    try:
        from hypothesis.internal.reflection import get_pretty_function_description
        from schemathesis.generation.jsonschema import strategy

        get_pretty_function_description(strategy._TYPE_CHECKS["null"])
    except (ImportError, AttributeError, KeyError):  # private names moved: nothing to warm
        pass


def fuzz(port: int) -> dict[str, collections.Counter[int]]:
    """Every operation of the service on ``port``, :data:`EXAMPLES` cases each; the status codes seen per operation."""
    describe_lambdas_near_the_stack_top()
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    seen: dict[str, collections.Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        codes = seen.setdefault(operation.label, collections.Counter())
        cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode))
        check_cases(cases, f"http://127.0.0.1:{port}", codes)
        log.info("%s: status codes %s", operation.label, dict(codes))
    return seen


def check_cases(cases: st.SearchStrategy[schemathesis.Case], base_url: str, codes: collections.Counter[int]) -> None:
    """Call and validate :data:`EXAMPLES` cases drawn from ``cases``, counting their status codes in ``codes``."""

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=60)
        codes[response.status_code] += 1

    run()


def test_the_learner_serves_its_document_and_keeps_to_it(redis_server):
    _, name = new_stream(redis_server.url, "contract")
    with running(redis_server.url, name, lease_ttl=60.0) as (_service, port, _):  # keeps its lease under load
        wait_for(lambda: fetch(port, "/readyz")[0] == 200, 60, "a learner with a model")
        assert served_document(port) == (DOCS / "learner.json").read_text()
        seen = fuzz(port)
        assert len(seen) == 10 and all(seen.values()), seen
        for label, refused in (("GET /sample", 400), ("GET /density", 400), ("GET /static/{name}", 404)):
            assert seen[label][200] and seen[label][refused], (label, seen[label])


def test_the_ingest_worker_serves_its_document_and_keeps_to_it(tmp_path: Path, kafka_server, redis_server):
    from sketch_store.redis_connect import connect
    from sketch_store.redis_store import SketchStore

    name = f"contract-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-records"
    new_ingest_stream(SketchStore(connect(redis_server.url)), name)
    ensure_topic(kafka_server.bootstrap, topic, 1)
    worker = Worker(tmp_path, "worker", name, topic, kafka_server.bootstrap, redis_server.url)
    try:
        wait_for(lambda: ready(worker), 90, "a ready ingest worker")
        assert served_document(worker.port) == (DOCS / "ingest.json").read_text()
        seen = fuzz(worker.port)
        assert len(seen) == 3 and all(seen[label][200] for label in seen), seen
    finally:
        assert worker.stop() == 0, worker.tail()
