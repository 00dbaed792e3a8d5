"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks (Debian's ``postgresql`` package).

::

    with LocalPostgres() as server:           # initdb + pg_ctl start in a temporary folder
        url = server.new_database("study_a")  # postgresql://tuner:...@127.0.0.1:PORT/study_a
        ...                                   # on exit: stopped and deleted, whatever happened inside

The cluster is built for speed, not durability (``fsync=off``): never point it at data you want to keep.
Clients authenticate with passwords (scram-sha-256) over TCP as the role ``tuner``, which owns the
databases it is given. The server's superuser ``postgres`` is reachable only through the unix socket in the
cluster's private folder. Running as root, the cluster belongs to the ``postgres`` OS user and its commands
run through ``runuser``, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

if TYPE_CHECKING:
    import psycopg

__all__ = ["LocalPostgres", "PostgresUnavailable", "find_bindir"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "Install Debian's PostgreSQL server: `apt-get install postgresql` (`make test` does it)."
_TOOLS = ("initdb", "pg_ctl", "postgres")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Settings for a fast, disposable server (appended to its postgresql.conf).
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # a few workers x SQLAlchemy pools, plus what tests leave to the GC
    "shared_buffers": "32MB",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries (or, as root, the ``postgres`` OS user) are not on this machine."""


def find_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``: ``$TUNER_POSTGRES_BINDIR`` if set (then only there), else
    ``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``, else ``initdb`` on PATH;
    :class:`PostgresUnavailable` if none has them."""
    candidates: list[Path] = []
    chosen = os.environ.get("TUNER_POSTGRES_BINDIR")
    if chosen:
        return _check_bindir(Path(chosen), "$TUNER_POSTGRES_BINDIR")
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.SubprocessError, OSError) as error:
            logger.debug("pg_config --bindir failed: %s", error)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name), reverse=True
    )
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in _TOOLS):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "nothing"
    raise PostgresUnavailable(
        f"PostgreSQL server binaries ({', '.join(_TOOLS)}) not found (pg_config --bindir, "
        f"/usr/lib/postgresql/*/bin and PATH; looked in: {looked}). {_INSTALL_HINT}"
    )


def _check_bindir(bindir: Path, source: str) -> Path:
    missing = [tool for tool in _TOOLS if not (bindir / tool).is_file()]
    if missing:
        raise PostgresUnavailable(f"{source} = {bindir} lacks {', '.join(missing)}. {_INSTALL_HINT}")
    return bindir


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 while the ``with`` block runs.

    ``url`` is the store URL of the role ``tuner`` on its database ``tuner``; :meth:`new_database` gives a
    fresh, empty database (one per test), :meth:`readonly_url` a role that may only read one.
    """

    host = "127.0.0.1"
    user = "tuner"
    database = "tuner"
    reader = "tuner_reader"

    def __init__(self, bindir: str | Path | None = None, *, start_timeout: float = 60.0) -> None:
        self.bindir = Path(bindir) if bindir is not None else None
        self.start_timeout = start_timeout
        self.password = secrets.token_urlsafe(18)
        self.reader_password = secrets.token_urlsafe(18)
        self.port: int | None = None
        self.root: Path | None = None  # the temporary folder: data/, the socket, server.log
        self.version = ""
        self.startup_seconds: float | None = None
        self._as_owner: list[str] = []  # runuser prefix when running as root
        self._reader_created = False

    # ------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """initdb a cluster in a new temporary folder and start it (``pg_ctl -w``); see the module doc."""
        if self.root is not None:
            raise RuntimeError("this LocalPostgres is already running; use one per `with` block")
        started = time.perf_counter()
        bindir = self.bindir = _check_bindir(self.bindir, "bindir") if self.bindir else find_bindir()
        owner = self._owner()
        self.root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
        atexit.register(self.stop)  # a session that dies without unwinding still removes the cluster
        try:
            if owner is not None:
                os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._initdb(bindir)
            self._start_server(bindir)
            self._admin_sql(
                [
                    f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD %s",
                    f"CREATE DATABASE {self.database} OWNER {self.user}",
                ],
                params=[(self.password,), None],
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        logger.info(
            "PostgreSQL %s on %s:%d ready in %.1f s (cluster %s)",
            self.version,
            self.host,
            self.port,
            self.startup_seconds,
            self.root,
        )

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its folder; safe to call twice."""
        atexit.unregister(self.stop)
        root, self.root = self.root, None
        if root is None:
            return
        data = root / "data"
        if (data / "postmaster.pid").exists():
            assert self.bindir is not None  # set by start()
            result = self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], check=False, cwd=root
            )
            if result.returncode != 0:
                logger.warning(
                    "pg_ctl stop failed (%s): %s", result.returncode, (result.stderr or result.stdout).strip()
                )
        shutil.rmtree(root, ignore_errors=True)
        logger.info("PostgreSQL on port %s stopped and removed", self.port)
        self.port, self._reader_created = None, False

    # ------------------------------------------------------------------------------------------- outages
    def restart(self, mode: str = "fast") -> float:
        """``pg_ctl restart -m MODE`` on the same port: every client connection is dropped. Returns the seconds
        it took (the server is ready again when it returns)."""
        started = time.perf_counter()
        self._pg_ctl("restart", "-m", mode, "-o", f"-p {self.port}", "-l", str(self._log))
        return time.perf_counter() - started

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m MODE``), keeping its cluster: :meth:`start_server` starts it again."""
        self._pg_ctl("stop", "-m", mode)

    def start_server(self) -> None:
        """Start the server stopped by :meth:`stop_server` again, on the same port."""
        self._pg_ctl("start", "-o", f"-p {self.port}", "-l", str(self._log))

    @property
    def _log(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def _pg_ctl(self, action: str, *options: str) -> None:
        if self.root is None or self.bindir is None:
            raise RuntimeError("LocalPostgres is not running; use it as `with LocalPostgres() as server:`")
        timeout = str(int(self.start_timeout))
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-w", "-t", timeout, *options, action],
                  cwd=self.root, timeout=self.start_timeout + 30)  # fmt: skip

    # ---------------------------------------------------------------------------------------------- URLs
    @property
    def url(self) -> str:
        """``postgresql://tuner:PASSWORD@127.0.0.1:PORT/tuner`` (the plain form the README documents)."""
        return self.url_for(self.database)

    def url_for(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` for ``user`` (default: the role ``tuner``)."""
        if self.port is None:
            raise RuntimeError("LocalPostgres is not running; use it as `with LocalPostgres() as server:`")
        user = user or self.user
        password = password if password is not None else self.password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create the empty database ``name`` (owned by ``tuner``) and return its URL."""
        name = _identifier(name)
        self._admin_sql([f"CREATE DATABASE {name} OWNER {self.user}"])
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing the connections still open to it (clients may leave pooled ones)."""
        self._admin_sql([f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)"])

    def readonly_url(self, database: str) -> str:
        """The URL of a role that may connect to ``database`` and SELECT from its tables, nothing more.

        Grants cover the tables that exist now: call it after the store's schema is created (after a
        first ``open_storage`` or study on the database).
        """
        database = _identifier(database)
        statements = []
        params: list[Sequence[Any] | None] = []
        if not self._reader_created:
            statements.append(f"CREATE ROLE {self.reader} LOGIN PASSWORD %s")
            params.append((self.reader_password,))
        statements += [
            f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {database} TO {self.reader}",
        ]
        params += [None, None]
        self._admin_sql(statements, params=params)
        self._reader_created = True
        self._admin_sql(
            [
                f"GRANT USAGE ON SCHEMA public TO {self.reader}",
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {self.reader}",
            ],
            database=database,
        )
        return self.url_for(database, self.reader, self.reader_password)

    # ------------------------------------------------------------------------------------------ internals
    def _owner(self) -> pwd.struct_passwd | None:
        """As root: the ``postgres`` OS user that will own the cluster (None when not root)."""
        if os.geteuid() != 0:
            return None
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root, the test server needs the 'postgres' OS user to own it (PostgreSQL refuses to "
                f"run as root), and there is none. {_INSTALL_HINT} It creates that user."
            ) from None
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root needs `runuser` (util-linux) to start PostgreSQL as 'postgres'.")
        self._as_owner = ["runuser", "-u", "postgres", "--"]
        return owner

    def _run(
        self, command: list[str], *, check: bool = True, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a server command as the cluster's owner (``cwd`` must be readable by it)."""
        logger.debug("running %s", " ".join(command))
        result = subprocess.run(
            [*self._as_owner, *command], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed with exit status {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def _initdb(self, bindir: Path) -> None:
        assert self.root is not None
        data = self.root / "data"
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.root,
        )
        # the superuser trusts the unix socket; only the owner can reach it (the folder is private)
        settings = {**_SETTINGS, "unix_socket_directories": f"'{self.root}'"}
        with open(data / "postgresql.conf", "a") as conf:  # the owner created it; root appends
            conf.write("\n# tuner.testing.postgres: a disposable test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.version = (data / "PG_VERSION").read_text().strip()

    def _start_server(self, bindir: Path, attempts: int = 3) -> None:
        """``pg_ctl -w start`` on a free port (another free one if something took it meanwhile)."""
        assert self.root is not None
        log = self.root / "server.log"
        for attempt in range(1, attempts + 1):
            self.port = _free_port()
            result = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(int(self.start_timeout)),
                    "-o",
                    f"-p {self.port}",
                    "start",
                ],
                check=False,
                cwd=self.root,
                timeout=self.start_timeout + 30,
            )
            if result.returncode == 0:
                return
            server_log = log.read_text(errors="replace") if log.exists() else ""
            if "could not bind" in server_log and attempt < attempts:
                logger.info("port %d was taken meanwhile; trying another", self.port)
                continue
            tail = "\n".join(server_log.strip().splitlines()[-10:])
            raise RuntimeError(
                f"PostgreSQL did not start (pg_ctl exit status {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}\nserver log ({log}):\n{tail}"
            )

    @contextmanager
    def _admin(self, database: str = "postgres") -> Iterator[psycopg.Connection]:
        """An autocommit connection of the superuser through the private unix socket.

        Its cursors bind parameters on the client (``CREATE ROLE ... PASSWORD %s`` takes no server-side
        parameter); CREATE/DROP DATABASE cannot run in a transaction, hence autocommit.
        """
        import psycopg

        assert self.root is not None and self.port is not None
        connection = psycopg.connect(
            host=str(self.root), port=self.port, user="postgres", dbname=database, autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )  # fmt: skip
        try:
            yield connection
        finally:
            connection.close()

    def _admin_sql(
        self,
        statements: Sequence[str],
        *,
        params: Sequence[Sequence[Any] | None] | None = None,
        database: str = "postgres",
    ) -> None:
        with self._admin(database) as connection, connection.cursor() as cursor:
            for statement, values in zip(statements, params or [None] * len(statements)):
                cursor.execute(statement, values)


def _identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier (so it needs no quoting), else ValueError."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"database name {name!r}: use lower-case letters, digits and _ (at most 63, not starting with a digit)"
        )
    return name
