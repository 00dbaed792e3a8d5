"""The PostgreSQL store on the session's throwaway server (tuner.testing.postgres): studies round-trip,
passwords stay out of logs and errors, and a read-only role can read but not write."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys

import optuna
import psycopg
import pytest
import sqlalchemy
from conftest import REPO

from tuner import StudySpec, run_study
from tuner.errors import StorageError
from tuner.reports.tables import study_rows
from tuner.store.connect import mask_url, open_storage
from tuner.store.records import epochs_of
from tuner.testing.postgres import LocalPostgres, PostgresUnavailable, _free_port

SMALL = {"n_train": 128, "n_val": 64, "n_features": 8, "hidden": [16, 16, 16]}


def _spec(**overrides):
    values = {
        "name": "pg_tiny",
        "objective": "synthetic",
        "data": None,
        "options": SMALL,
        "fixed": {"batch_size": 32},
        "search_space": str(REPO / "search_spaces" / "synthetic.yaml"),
        "n_trials": 2,
        "max_epochs": 2,
    }
    return StudySpec(**{**values, **overrides})


@pytest.fixture
def database(postgres_server: LocalPostgres, request: pytest.FixtureRequest):
    name = f"t_{abs(hash(request.node.nodeid)) % 10**12}"
    url = postgres_server.new_database(name)
    yield name, url
    postgres_server.drop_database(name)


def _scalar(url: str, sql: str):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql)).scalar()
    finally:
        engine.dispose()


def test_every_store_backend_holds_a_study(storage_url):
    """storage_url runs once per backend (PostgreSQL included): a fresh, empty, writable store each time."""
    storage = open_storage(storage_url, heartbeat=False)
    assert optuna.get_all_study_names(storage=storage) == []
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=storage_url).trials) == 2


def test_the_server_takes_password_logins_on_loopback(postgres_server, database):
    name, url = database
    assert url.startswith(f"postgresql://tuner:{postgres_server.password}@127.0.0.1:{postgres_server.port}/")
    assert _scalar(url, "SELECT current_user") == "tuner"
    assert _scalar(url, "SELECT current_database()") == name
    assert (
        _scalar(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    )  # a plain role, as in production
    assert _scalar(url, "SHOW password_encryption") == "scram-sha-256"
    assert _scalar(postgres_server.url, "SELECT current_database()") == "tuner"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=postgres_server.port, user="tuner", password="wrong", dbname=name)


def test_each_new_database_is_empty_and_dropped_ones_are_gone(postgres_server, database):
    name, url = database
    optuna.create_study(study_name="a", storage=url)
    other = postgres_server.new_database(f"{name}_b")
    try:
        assert optuna.get_all_study_names(storage=other) == []
        assert optuna.get_all_study_names(storage=url) == ["a"]
    finally:
        postgres_server.drop_database(f"{name}_b")
    with pytest.raises(sqlalchemy.exc.OperationalError, match="does not exist"):
        _scalar(other, "SELECT 1")
    with pytest.raises(ValueError, match="lower-case letters"):
        postgres_server.new_database("Robert'); DROP TABLE students;--")


def test_a_study_round_trips_without_showing_the_password(postgres_server, database, tmp_path, caplog, capfd):
    _, url = database
    with caplog.at_level(logging.DEBUG, logger="tuner"):
        run_study(_spec(), url, workdir=tmp_path, show_progress=False)
    stored = optuna.load_study(study_name="pg_tiny", storage=url)
    finished = [
        t for t in stored.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 2
    for trial in finished:
        assert [e["epoch"] for e in epochs_of(trial)] == list(range(trial.user_attrs["epochs_run"]))
        assert trial.user_attrs["config"]["batch_size"] == 32
    assert stored.user_attrs["objective"] == "synthetic" and "mse" in stored.user_attrs["baseline"]
    logged = caplog.text + "".join(capfd.readouterr())
    assert mask_url(url) in logged  # the store is named in the log, masked
    assert postgres_server.password not in logged


@pytest.mark.parametrize("where", ["wrong password", "closed port"])
def test_store_errors_mask_the_password(postgres_server, database, where):
    name, _ = database
    secret = "s3cret-Pa55word"
    port = postgres_server.port if where == "wrong password" else _free_port()
    url = f"postgresql://tuner:{secret}@127.0.0.1:{port}/{name}"
    with pytest.raises(StorageError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert secret not in message and mask_url(url) in message
    assert ("password authentication failed" if where == "wrong password" else "refused") in message


def test_a_read_only_role_reads_studies_but_cannot_write(postgres_server, database, tmp_path):
    name, url = database
    run_study(_spec(n_trials=1), url, workdir=tmp_path, show_progress=False)
    readonly = postgres_server.readonly_url(name)
    assert readonly.startswith(f"postgresql://{postgres_server.reader}:")

    study = optuna.load_study(study_name="pg_tiny", storage=readonly)
    written = optuna.load_study(study_name="pg_tiny", storage=url)
    assert [t.value for t in study.trials] == [t.value for t in written.trials]
    (row,) = study_rows(open_storage(readonly, heartbeat=False))
    assert row["study"] == "pg_tiny" and row["objective"] == "synthetic" and row["trials"] == 1

    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        study.set_user_attr("note", "written by a reader")
    assert "permission denied" in str(caught.value.__cause__)
    with pytest.raises(StorageError, match="read-only for this user") as caught:
        run_study(_spec(n_trials=2), readonly, n_trials=1, workdir=tmp_path, show_progress=False)
    assert postgres_server.reader_password not in str(caught.value)
    assert len(optuna.load_study(study_name="pg_tiny", storage=url).trials) == 1  # nothing was added


def test_a_server_is_stopped_and_removed_even_when_its_block_fails():
    with pytest.raises(KeyError), LocalPostgres() as server:
        root, port = server.root, server.port
        assert (root / "data" / "PG_VERSION").is_file() and _scalar(server.url, "SELECT 1") == 1
        raise KeyError("a failing test")
    assert not root.exists() and server.root is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_missing_binaries_say_how_to_install_them(tmp_path):
    server = LocalPostgres(bindir=tmp_path)  # a folder without initdb
    with pytest.raises(
        PostgresUnavailable,
        match=r"lacks initdb, pg_ctl, postgres\. Install Debian's PostgreSQL server: `apt-get install postgresql`",
    ):
        server.start()
    assert server.root is None and server.port is None


@pytest.mark.parametrize("skip", [False, True])
def test_without_postgresql_its_tests_fail_unless_told_to_skip(tmp_path, skip):
    """Its store tests fail on a machine without PostgreSQL (CI must not pass them silently) unless
    TUNER_TESTS_WITHOUT_POSTGRES=1; the SQLite ones run either way."""
    env = {**os.environ, "TUNER_POSTGRES_BINDIR": str(tmp_path), "TUNER_TESTS_WITHOUT_POSTGRES": "1" if skip else ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=0",
            "-rs",
            "tests/test_postgres.py",
            "-k",
            "every_store_backend",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout + result.stderr
    assert "apt-get install postgresql" in out
    if skip:
        assert (
            result.returncode == 0
            and re.search(r"1 passed, .*1 skipped", out)
            and "TUNER_TESTS_WITHOUT_POSTGRES=1" in out
        )
    else:
        assert result.returncode == 1 and re.search(r"1 passed, .*1 error", out) and "PostgresUnavailable" in out


def test_tuner_run_takes_the_plain_postgresql_url_the_readme_documents(database, tmp_path, monkeypatch, capsys):
    """`tuner run studies/smoke_test.py --storage postgresql://user:password@host:port/db`, as a user types it."""
    from tuner.cli import main

    name, url = database
    assert re.fullmatch(r"postgresql://tuner:[^@]+@127\.0\.0\.1:\d+/" + name, url)  # no +driver suffix
    monkeypatch.chdir(REPO)  # the study file names its search space relative to the repository
    main(["run", "studies/smoke_test.py", "--storage", url, "--max-epochs", "1", "--workdir", str(tmp_path),
          "--artifacts", str(tmp_path / "artifacts")])  # fmt: skip
    study = optuna.load_study(study_name="smoke_test", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 8
    assert "best: trial" in capsys.readouterr().out


@pytest.mark.bad_input
def test_a_url_whose_driver_is_not_installed_names_the_package(tmp_path, monkeypatch, capsys):
    from tuner.cli import main

    monkeypatch.chdir(REPO)
    url = "postgresql+psycopg2://tuner:s3cret@127.0.0.1:5432/tuner"  # psycopg2 is not installed with tuner
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "studies/smoke_test.py", "--storage", url, "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "s3cret" not in err and "Traceback" not in err
    assert "needs the database driver 'psycopg2'" in err and "pip install 'psycopg2-binary'" in err
    assert "plain form postgresql://" in err
