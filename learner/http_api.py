"""The learner's HTTP endpoints (:mod:`service_http`: FastAPI on uvicorn; see docs/learner.md, "HTTP").

| path | answer |
|---|---|
| ``/metrics`` | Prometheus text format |
| ``/healthz`` | 200 while the process runs |
| ``/readyz`` | 200 ``{"ready": true, …}`` while the stream is reachable and this replica has a model to serve \
(leading, or a standby with an accepted checkpoint); 503 with ``"reason"`` otherwise |
| ``/sample?n=N`` | ``{"samples": [[…], …]}`` in the data's units (a typed stream: ``{"fields": […], \
"records": [{…}, …]}``, :meth:`~learner.serving.ServedModel.sample_body`); 400 on a bad ``n`` (1 ≤ n ≤ the cap), \
503 with no model yet, 429 when ``LearnConfig.max_concurrent_samples`` requests are already sampling |
| ``/status`` | JSON: stream, records, loss, rounds, steps, leader, checkpoint age, ``checkpoint_error`` \
(``{"reason", "time"}`` of the last refused stored checkpoint, or null), drift, ``drift_fields`` (per-field \
scores, top first: :mod:`learner.drift_fields`) |
| ``/`` | the live page (``learner/web/``; static files under ``/static/``): samples, loss, drift, records, state |
| ``/history?since=T`` | JSON: state now (leader, lease holder, records, records/s, spec d/m/law/σ, loss, drift, \
threshold, ``drift_fields``) and ``points``, the per-loop history (time, loss, floor, drift, threshold, records, \
leader, round, steps) newer than Unix time ``T`` (all held points without it). A ring buffer of \
``LearnConfig.history_size`` points (2000): memory and payload are bounded. |
| ``/density?n=N&x=I&y=J&bins=B`` | JSON: ``N`` samples (default 10 000, ≤ the cap) binned server-side, never sent \
raw: a ``B × B`` histogram (default 64, 2 ≤ B ≤ 200) of coordinates ``I``, ``J`` (default 0, 1) and a ``B``-bin \
histogram per coordinate (the first 32 and the pair); 400 on bad values, 503 with no model yet, 429 as ``/sample`` |
| ``/openapi.json`` | the OpenAPI document, checked in as ``docs/openapi/learner.json`` (bodies: \
:mod:`learner.http_schemas`) |

Every answer is JSON without NaN or Infinity (:mod:`learner.json_safe`: non-finite numbers are
null). Sampling never holds the training lock: it draws from the immutable snapshot the loop
publishes after each slice (:mod:`learner.serving`). At most ``max_concurrent_samples``
requests sample at once (:class:`Sampler`); beyond that the answer is 429 with ``Retry-After``
at once, never a wait. Sampling and its JSON encoding run on a dedicated pool of that many
threads, each at nice :data:`SAMPLING_NICE` from its start (Linux), so when CPUs are scarce the
training thread keeps most of its share, while probes and ``/metrics`` run on the server's other
threads at normal priority. ``/status`` and ``/history`` are encoded off the event loop too. An
exception inside a handler is answered with 500 ``{"error": …}`` and logged once.
"""

import logging
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Path, Query
from prometheus_client import CollectorRegistry
from starlette.middleware import Middleware
from starlette.responses import Response

from learner import http_schemas as schemas
from learner import json_safe
from learner.config import LearnConfig
from learner.page import MAX_BINS, asset, category_bars, density_payload
from learner.sampler import RETRY_AFTER_SECONDS, SAMPLING_NICE, Sampler, lower_this_threads_priority
from learner.service import LearnerService, NoModelError
from service_http import ApiError, HttpServer, Probes, create_app, json_response
from service_http.auth import HttpAuth
from service_http.openapi import error_body, json_body, with_common
from service_http.query import BlankQueryIsAbsent
from sketch_store.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["RETRY_AFTER_SECONDS", "SAMPLING_NICE", "lower_this_threads_priority", "make_app", "serve"]

_BUSY = error_body("busy: max_concurrent_samples requests are sampling; retry after Retry-After seconds",
                   retry_after=True)


def _json(body: object) -> Response:
    return json_response(body, encode=json_safe.dumps)


def make_app(service: LearnerService | None, config: LearnConfig | None = None,
             middleware: Sequence[Middleware] = ()) -> FastAPI:
    """The learner's app bound to ``service`` (None, with ``config``: an app that only documents itself).

    Bounds that come from the configuration (``n ≤ max_sample``) are in the OpenAPI document; those
    that come from the stream (``x, y < d``) are in the descriptions (the spec can change at run time).
    """
    config = config if config is not None else _bound(service).config
    probes = Probes(
        lambda: (True, {"ok": True}),
        lambda: _readiness(_bound(service)), schemas.HEALTH, schemas.READINESS,
        liveness_help="200 while the process runs.",
        readiness_help="200 while the stream is reachable and this replica has a model to serve (leading, or a "
                       "standby with an accepted checkpoint); 503 with the same fields and `reason` otherwise.",
    )
    app = create_app(title="sketchgen learner", registry=_registry(service), probes=probes, logger=log,
                     encode=json_safe.dumps,
                     middleware=[Middleware(BlankQueryIsAbsent, paths=frozenset({"/history", "/density"})),
                                 *middleware],
                     description="Samples, state and live page of a learner (docs/learner.md, \"HTTP\"). Every "
                                 "number may be null: non-finite values are never written as NaN or Infinity.")
    sampler = Sampler(config.max_concurrent_samples)
    _add_state_routes(app, service)
    _add_sampling_routes(app, service, config, sampler)
    _add_page_routes(app)
    return app


def _bound(service: LearnerService | None) -> LearnerService:
    if service is None:
        raise RuntimeError("this learner app only documents itself (built without a service)")
    return service


def _registry(service: LearnerService | None) -> CollectorRegistry:
    return CollectorRegistry() if service is None else service.metrics.registry


def _readiness(service: LearnerService) -> tuple[bool, dict[str, object]]:
    ready, reason = service.readiness()
    return ready, {"ready": ready, "leader": service.is_leader, "reason": reason}


def _add_state_routes(app: FastAPI, service: LearnerService | None) -> None:
    """``/status`` and ``/history`` (synchronous: encoded on the server's thread pool, off the event loop)."""

    @app.get("/status", response_class=Response, summary="The learner's state", tags=["state"],
             responses=with_common({200: json_body("stream, records, loss, rounds, leader, checkpoint, drift",
                                                   schemas.STATUS)}))
    def status() -> Response:
        return _json(_bound(service).status())

    @app.get("/history", response_class=Response, summary="State now and the per-loop history", tags=["state"],
             responses=with_common({200: json_body("the state now and the held points newer than since",
                                                   schemas.HISTORY),
                                    400: error_body("since is not a number")}))
    def history(since: Annotated[float | None, Query(description="Unix time: only points newer than it "
                                                                 "(all held points without it)")] = None) -> Response:
        return _json(_bound(service).history_payload(since))


def _add_sampling_routes(app: FastAPI, service: LearnerService | None, config: LearnConfig, sampler: Sampler) -> None:
    """``/sample`` and ``/density``: at most ``max_concurrent_samples`` at once, on the sampler's niced threads."""
    cap = config.max_sample
    no_model = error_body("no model yet (or its samples cannot be decoded, or a model of another d): retry later")

    @app.get("/sample", response_class=Response, summary="Samples of the served model", tags=["sampling"],
             responses=with_common({200: json_body("n samples in the data's units, or n typed records",
                                                   schemas.SAMPLE),
                                    400: error_body("n is not an integer in [1, max_sample]"),
                                    429: _BUSY, 503: no_model}))
    async def sample(n: Annotated[int, Query(ge=1, le=cap, description="how many samples")] = min(1000, cap),
                     ) -> Response:
        svc = _bound(service)
        return Response(await sampler.run(lambda: json_safe.dumps(_sample_body(svc, n))),
                        media_type="application/json")

    @app.get("/density", response_class=Response, summary="Samples binned server-side", tags=["sampling"],
             responses=with_common({200: json_body("2-D histogram of (x, y) and per-coordinate histograms",
                                                   schemas.DENSITY),
                                    400: error_body("a bad value, x or y ≥ d, or x = y"),
                                    429: _BUSY, 503: no_model}))
    async def density(
        n: Annotated[int, Query(ge=1, le=cap, description="samples drawn and binned")] = min(10_000, cap),
        x: Annotated[int, Query(ge=0, description="first coordinate, < d")] = 0,
        y: Annotated[int | None, Query(ge=0, description="second coordinate, < d and ≠ x (default 1; "
                                                         "none when d = 1)")] = None,
        bins: Annotated[int, Query(ge=2, le=MAX_BINS, description="bins per coordinate")] = 64,
    ) -> Response:
        svc = _bound(service)
        d = svc.spec.d
        for name, value in (("x", x), ("y", y)):
            if value is not None and value > d - 1:
                raise ApiError(400, f"{name} must be an integer between 0 and {d - 1}, got {str(value)!r}")
        y = (1 if d > 1 else None) if y is None else y
        if d > 1 and y == x:
            raise ApiError(400, f"x and y must be two different coordinates of 0..{d - 1}")
        return Response(await sampler.run(lambda: _density_body(svc, n, x, y if d > 1 else None, bins)),
                        media_type="application/json")


def _samples(service: LearnerService, n: int) -> np.ndarray:
    """``n`` samples of the served snapshot (no lock held); 503 when there is no model yet."""
    try:
        return service.sample(n)
    except NoModelError as exc:
        raise ApiError(503, str(exc)) from None


def _sample_body(service: LearnerService, n: int) -> dict[str, object]:
    """``{"samples": …}``, or ``{"fields": …, "records": …}`` when the served snapshot is of typed records."""
    model = service.model
    if model is None or model.encoder is None:
        return {"samples": _samples(service, n)}
    try:
        return model.sample_body(n)
    except DataError as exc:  # a diverged model's non-finite numbers cannot be decoded to records
        raise ApiError(503, f"the model's samples cannot be decoded: {exc}") from None


def _density_body(service: LearnerService, n: int, x: int, y: int | None, bins: int) -> bytes:
    """The ``/density`` JSON (:func:`~learner.page.density_payload`) of ``n`` new samples, non-finite rows left out."""
    d = service.spec.d
    samples = _samples(service, n)
    if samples.shape[1] != d:  # the stream was just recreated with another d; the new model is coming
        raise ApiError(503, f"the model has d = {samples.shape[1]}, the stream's spec d = {d}; retry")
    finite = samples[np.isfinite(samples).all(axis=1)]
    if not len(finite):
        raise ApiError(503, "the model's samples are all NaN or infinite")
    payload = density_payload(finite, x, y, bins)
    return json_safe.dumps({**payload, **_typed_extras(service, finite), "nonfinite": int(n - len(finite))})


def _typed_extras(service: LearnerService, rows: np.ndarray) -> dict[str, object]:
    """``{"categories": …}`` (:func:`~learner.page.category_bars`) when the served model is of typed records."""
    model = service.model
    encoder = None if model is None else model.encoder
    if encoder is None or encoder.dim != rows.shape[1]:
        return {}
    return {"categories": category_bars(encoder, rows)}


def _add_page_routes(app: FastAPI) -> None:
    """``/``, ``/index.html`` and ``/static/<file>``: the live page's files (:func:`learner.page.asset`)."""
    page = {"description": "the live page", "content": {"text/html": {"schema": {"type": "string"}}}}
    files = {"description": "one of the page's files",
             "content": {ctype: {"schema": {"type": "string"}}
                         for ctype in ("text/html", "text/javascript", "text/css")}}

    @app.get("/", response_class=Response, summary="The live page", tags=["page"], responses=with_common({200: page}))
    def index() -> Response:
        return _asset("index.html")

    @app.get("/index.html", response_class=Response, summary="The live page", tags=["page"],
             responses=with_common({200: page}))
    def index_html() -> Response:
        return _asset("index.html")

    @app.get("/static/{name}", response_class=Response, summary="A file of the live page", tags=["page"],
             responses=with_common({200: files, 404: error_body("no such file")}))
    def static(name: Annotated[str, Path(description="a file of the page", examples=["app.js", "style.css"])],
               ) -> Response:
        return _asset(name)


def _asset(name: str) -> Response:
    try:
        body, ctype = asset(name)
    except KeyError:
        raise ApiError(404, f"no such file {name!r}") from None
    return Response(body, media_type=ctype)


def serve(service: LearnerService, port: int, host: str = "0.0.0.0", *,
          auth: HttpAuth | None = None) -> HttpServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` then ``server_close()`` to stop).

    ``auth``: bearer tokens for every endpoint but the probes, the page's files and ``/openapi.json``, and
    ``/metrics`` with its own (:mod:`service_http.auth`, docs/learner.md "Authentication"); None: open.
    """
    middleware = auth.middleware() if auth is not None else []
    server = HttpServer(make_app(service, middleware=middleware), host, port, name="sketchgen-http")
    log.info("learner HTTP on http://%s:%d (/ /history /density /metrics /healthz /readyz /sample /status "
             "/openapi.json)", host, server.server_port)
    return server
