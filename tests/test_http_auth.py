"""Bearer-token authentication (service_http/auth.py) on a tiny app served by a real uvicorn over a socket.

Checked: a guarded path answers 401 with ``WWW-Authenticate`` without a token, and with
``error="invalid_token"`` for a wrong one, never echoing it; either of two configured tokens passes;
the open paths stay open and an endpoint nobody listed is guarded; ``/metrics`` is open or behind its
own token set; a token file rotated through a Kubernetes-style symlink swap is picked up without a
restart, and a file that turns empty keeps the last good tokens with one warning; no token shows in
any log line (uvicorn's access log included); a token in the query string is never accepted; a
missing or empty file is refused at start.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import uvicorn

from service_http.auth import HttpAuth, TokenConfigError, TokenFile, is_open_path
from sketchgen.local_stack import free_port
from tests.auth_helpers import request, swap_secret
from tests.processes import wait_for

TOKEN_A = "tok-A.0123456789abcdef"
TOKEN_B = "tok-B_fedcba9876543210"
METRICS_TOKEN = "prom-scrape-token-42"
GUARDED = ["/sample?n=3", "/density", "/history", "/status", "/a-new-endpoint", "/static/../sample", "/sample/"]
OPEN = ["/healthz", "/readyz", "/", "/index.html", "/static/app.js", "/static/style.css", "/openapi.json"]


async def echo_app(scope, receive, send) -> None:
    """A tiny ASGI app: 200 ``{"path": …}`` on every path."""
    assert scope["type"] == "http"
    body = json.dumps({"path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class Served:
    """``app`` on a real uvicorn in a thread (access log on, records propagated to the root logger)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=True,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "uvicorn to start", step=0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def token_volume(tmp_path):
    """A Secret-like volume holding TOKEN_A and TOKEN_B (``…/token`` a symlink through ``..data``)."""
    volume = tmp_path / "secret"
    volume.mkdir()
    swap_secret(volume, f"# API tokens\n{TOKEN_A}\n\n{TOKEN_B}\n")
    return volume


@pytest.fixture
def served(token_volume, tmp_path):
    """The echo app behind API tokens A, B (checked every 0.1 s) and a separate metrics token."""
    (tmp_path / "metrics-token").write_text(METRICS_TOKEN + "\n")
    auth = HttpAuth(api=TokenFile(str(token_volume / "token"), check_every=0.1),
                    metrics=TokenFile(str(tmp_path / "metrics-token"), "metrics"))
    server = Served(auth.wrap(echo_app))
    yield server.port
    server.stop()


@pytest.mark.parametrize("path", GUARDED)
def test_a_guarded_path_needs_a_token(served, path):
    code, headers, body = request(served, path)
    assert code == 401, body
    assert headers["www-authenticate"] == 'Bearer realm="sketchgen"'
    assert "Authorization: Bearer" in json.loads(body)["error"]
    code, headers, body = request(served, path, token="not-a-configured-token")
    assert code == 401
    assert headers["www-authenticate"] == 'Bearer realm="sketchgen", error="invalid_token"'
    assert b"not-a-configured-token" not in body and "invalid token" in json.loads(body)["error"]
    for token in (TOKEN_A, TOKEN_B):
        code, _, body = request(served, path, token=token)
        assert code == 200, body


def test_open_paths_and_bad_headers(served):
    for path in OPEN:
        assert request(served, path)[0] == 200, path
    assert request(served, "/status", headers={"Authorization": f"Basic {TOKEN_A}"})[0] == 401
    assert request(served, "/status", headers={"Authorization": f"bearer {TOKEN_A}"})[0] == 200  # scheme: any case
    assert request(served, "/status", token=TOKEN_A + "x")[0] == 401
    assert request(served, "/status", token=TOKEN_A[:-1])[0] == 401
    code, _, body = request(served, f"/status?access_token={TOKEN_A}")
    assert code == 401 and "query string" in json.loads(body)["error"]


def test_metrics_has_its_own_token(served, token_volume, tmp_path):
    assert request(served, "/metrics")[0] == 401
    assert request(served, "/metrics", token=TOKEN_A)[0] == 401  # an API token is not a metrics token
    assert request(served, "/metrics", token=METRICS_TOKEN)[0] == 200
    assert request(served, "/sample", token=METRICS_TOKEN)[0] == 401  # nor the other way round
    open_metrics = Served(HttpAuth(api=TokenFile(str(token_volume / "token"))).wrap(echo_app))
    try:
        assert request(open_metrics.port, "/metrics")[0] == 200
        assert request(open_metrics.port, "/history")[0] == 401
    finally:
        open_metrics.stop()


def test_rotation_through_a_secret_volume_without_restart(served, token_volume, caplog):
    caplog.set_level(logging.DEBUG)
    # a service's server earlier in the process (service_http.server) leaves uvicorn's loggers at WARNING
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    new = "tok-C.rotated-in-0000"
    assert request(served, "/status", token=new)[0] == 401
    swap_secret(token_volume, f"{TOKEN_B}\n{new}\n")  # add the new token, drop A
    wait_for(lambda: request(served, "/status", token=new)[0] == 200, 5, "the new token to be accepted")
    assert request(served, "/status", token=TOKEN_A)[0] == 401
    assert request(served, "/status", token=TOKEN_B)[0] == 200
    swap_secret(token_volume, "\n# emptied by mistake\n")
    time.sleep(0.5)
    for _ in range(3):
        assert request(served, "/status", token=new)[0] == 200  # the last good set is kept
        time.sleep(0.2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping the 2 token(s)" in warnings[0].getMessage(), warnings
    swap_secret(token_volume, f"{new}\n")
    wait_for(lambda: request(served, "/status", token=TOKEN_B)[0] == 401, 5, "the old token to be refused")
    assert request(served, "/status", token=new)[0] == 200
    assert any("GET /status" in r.getMessage() for r in caplog.records), "uvicorn's access log was not captured"
    for secret in (TOKEN_A, TOKEN_B, new, METRICS_TOKEN):
        assert secret not in caplog.text


def test_start_up_refuses_a_missing_empty_or_malformed_file(tmp_path):
    with pytest.raises(TokenConfigError, match="cannot read the token file"):
        HttpAuth.from_files(str(tmp_path / "absent"), None)
    (tmp_path / "empty").write_text("\n# only a comment\n   \n")
    with pytest.raises(TokenConfigError, match="holds no token"):
        HttpAuth.from_files(None, str(tmp_path / "empty"))
    (tmp_path / "spaces").write_text("two words\n")
    with pytest.raises(TokenConfigError, match="line 1: not a bearer token") as err:
        HttpAuth.from_files(str(tmp_path / "spaces"), None)
    assert "two words" not in str(err.value)
    assert not HttpAuth.from_files(None, "").enabled
    assert HttpAuth().wrap(echo_app) is echo_app


def test_open_path_rule():
    assert is_open_path("/static/app.js") and is_open_path("/healthz")
    for path in ("/static/", "/static/../status", "/static//x", "/static/a\\b", "/healthz/", "/metrics", "/Sample"):
        assert not is_open_path(path), path
