"""``tuner dashboard``: optuna-dashboard served on tuner's store.

:func:`serve` runs optuna-dashboard's WSGI app on a threaded server, with the store behind Optuna's cache layer
and the study page of a large study answered by :class:`StudyDetailFirst` (the same JSON, faster); the notes and
figures it shows are written by :mod:`tuner.reports.notes`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tuner.reports import dashboard_internals
from tuner.store import optuna_internals
from tuner.store.artifacts import resolve_artifact_dir
from tuner.store.connect import mask_url, open_storage, resolve_storage_url, sqlite_path

__all__ = ["serve", "dashboard_url", "StudyDetailFirst"]

logger = logging.getLogger(__name__)


def dashboard_url(host: str, port: int) -> str:
    """The address to open in a browser for a server bound to ``host:port``."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("localhost" if host == "::" else host)
    if ":" in shown:  # IPv6 literal
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard/"


def serve(
    storage: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    echo: Any = print,
    artifacts: str | Path | None = None,
) -> None:
    """Serve optuna-dashboard on the store (``storage``, else ``$TUNER_STORAGE``, else the default
    SQLite file) until interrupted. ``echo`` receives the one line saying where to look. The trials'
    checkpoints in the artifact folder (``artifacts``, see :func:`tuner.store.connect.resolve_artifact_dir`)
    are listed under each trial and can be downloaded.

    The app is optuna-dashboard's :func:`optuna_dashboard.wsgi`, served by a threaded wsgiref server as
    the stock ``optuna-dashboard`` command does. (``optuna_dashboard.run_server`` serves one request at a
    time: a browser holding an idle connection open, such as a second tab or a preconnect, stalls it.)
    """
    import optuna_dashboard

    from tuner.errors import StorageError, TunerError

    url = resolve_storage_url(storage)
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        # optuna-dashboard would create an empty store there and show nothing
        raise StorageError(
            f"no trial store at {sqlite_file} ({mask_url(url)}). Run a study first (tuner run STUDY_FILE) "
            "or pass the store with --storage URL / TUNER_STORAGE."
        )
    import optuna

    folder = resolve_artifact_dir(url, artifacts)
    artifact_store = optuna.artifacts.FileSystemArtifactStore(folder) if folder.is_dir() else None
    # Optuna's cache layer: after its first read of a study, optuna-dashboard's refreshes read only the
    # trials that are new or still running (it re-reads every trial every 10 s otherwise)
    store = optuna_internals.cached(open_storage(url, heartbeat=False))
    app = StudyDetailFirst(optuna_dashboard.wsgi(store, artifact_store=artifact_store), store)
    try:
        server = _make_server(host, port, app)
    except OSError as error:  # port in use, address not local, ...
        raise TunerError(
            f"cannot serve the dashboard on {host}:{port}: {error.strerror or error} (try another --port)"
        ) from None
    echo(f"optuna-dashboard on {mask_url(url)}: {dashboard_url(host, server.server_port)} (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class StudyDetailFirst:
    """optuna-dashboard's WSGI ``app``, whose study request (``GET /api/studies/<id>``: the study page's first
    load and its refreshes, every trial of the study) :func:`tuner.reports.dashboard_internals.dashboard_study_detail`
    answers: the same JSON, in half the time for a study of 10,000 trials. Every other request, and a study that
    function leaves to optuna-dashboard (several objectives, preferential), goes to the ``app``."""

    _PATH = re.compile(r"/api/studies/(\d+)")

    def __init__(self, app: Any, storage: Any) -> None:
        self.app = app
        self.storage = storage

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        import json
        from urllib.parse import parse_qs

        match = self._PATH.fullmatch(environ.get("PATH_INFO", ""))
        after = parse_qs(environ.get("QUERY_STRING", "")).get("after", ["0"])[-1]
        if environ.get("REQUEST_METHOD") == "GET" and match and after.isdigit():
            try:
                body = dashboard_internals.dashboard_study_detail(
                    self.app, self.storage, int(match.group(1)), int(after)
                )
            except Exception as error:  # optuna-dashboard answers (and reports) it
                logger.debug("study %s: %s: %s", match.group(1), type(error).__name__, error)
                body = None
            if body is not None:
                data = json.dumps(body, separators=(",", ":")).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
                return [data]
        return self.app(environ, start_response)


def _make_server(host: str, port: int, app: Any) -> Any:
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, app, server_class=ThreadedWSGIServer)
