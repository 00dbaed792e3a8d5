"""Calling a WSGI app (optuna-dashboard's) in-process, as the browser's requests reach it."""

from __future__ import annotations

import io
import json
import sys
from typing import Any


def get_json(app: Any, path: str, query: str = "") -> Any:
    """``GET path?query`` on ``app``; its JSON body (an AssertionError with the body's start unless 200 OK)."""
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "test",
        "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
    }  # fmt: skip
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], body[:500]
    return json.loads(body)
