"""Helpers for the HTTP authentication tests: a GET with an optional bearer token, token files, and an OpenAPI
path made concrete."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path
from typing import Any


def request(port: int, path: str, token: str | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of a GET on 127.0.0.1:``port``, the path sent as is;
    (0, {}, b"") when nothing listens (yet)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except ConnectionError:
        return 0, {}, b""
    finally:
        conn.close()


def concrete(path: str, operation: dict[str, Any]) -> str:
    """``path`` with each ``{parameter}`` replaced by its first documented example (else ``x``)."""
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            examples = param.get("schema", {}).get("examples") or param.get("examples") or ["x"]
            path = path.replace("{" + param["name"] + "}", str(examples[0]))
    return path


def swap_secret(volume: Path, text: str) -> None:
    """Write ``volume``/token the way the kubelet updates a Secret volume: a new timestamped directory, then an
    atomic rename of the ``..data`` symlink onto it (``token`` itself is a symlink through ``..data``)."""
    versions = sorted(volume.glob("..20*"))
    new = volume / f"..20{time.time_ns()}"
    new.mkdir()
    (new / "token").write_text(text)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, volume / "..data")
    if not (volume / "token").is_symlink():
        (volume / "token").symlink_to("..data/token")
    for old in versions:
        (old / "token").unlink()
        old.rmdir()
