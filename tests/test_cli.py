"""The command line as a user runs it, and the stock optuna / optuna-dashboard tools on its store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_OPTIONS

BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYANNOTE_METRICS_ENABLED": "false", "COLUMNS": "200"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_help_is_instant_and_imports_no_heavy_library():
    code = (
        "import sys, tuner.cli; tuner.cli.cli.main(['--help'], standalone_mode=False); "
        "print(sorted(m for m in ('torch', 'optuna', 'lightning', 'pyannote.audio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "tuner run studies/pyannote_optim.py" in out
    assert out.strip().endswith("[]")


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory, demo_corpus):
    """A tiny study run through the real `tuner run` command, in its own working directory."""
    work = tmp_path_factory.mktemp("cli")
    (work / "studies").mkdir()
    (work / "studies" / "tiny.py").write_text(
        textwrap.dedent(f"""
        import optuna
        from tuner import StudySpec

        study = StudySpec(
            name="cli_tiny",
            objective="pyannote_segmentation",
            data={str(demo_corpus)!r},
            search_space={str(REPO / "search_spaces" / "pyannote_scratch.yaml")!r},
            sampler=optuna.samplers.RandomSampler(seed=0),
            n_trials=2,
            max_epochs=1,
            fixed={{"batch_size": 8}},
            options={TINY_OPTIONS!r},
            trainer={{"limit_train_batches": 2}},
        )
    """)
    )
    result = _run(str(BIN / "tuner"), "run", "studies/tiny.py", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


def test_run_uses_the_default_sqlite_store_and_prints_the_table(cli_study):
    work, result = cli_study
    assert (work / "storage" / "tuner.db").is_file()
    assert "study cli_tiny" in result.stdout and "DER" in result.stdout
    assert "best: trial" in result.stdout and "untrained model" in result.stdout
    assert "Traceback" not in result.stderr


def test_rerun_meets_the_budget_without_new_trials(cli_study):
    work, _ = cli_study
    result = _run(str(BIN / "tuner"), "run", "studies/tiny.py", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing to run" in result.stderr


def test_tuner_studies_lists_the_study(cli_study):
    work, _ = cli_study
    result = _run(str(BIN / "tuner"), "studies", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "cli_tiny" in result.stdout and "pyannote_segmentation" in result.stdout


def test_tuner_export_writes_yaml(cli_study):
    work, _ = cli_study
    result = _run(str(BIN / "tuner"), "export", "cli_tiny", "--out", "best.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    exported = yaml.safe_load((work / "best.yaml").read_text())
    assert exported["study"] == "cli_tiny" and exported["metric"]["name"] == "DER"


def test_stock_optuna_cli_reads_the_store(cli_study):
    work, _ = cli_study
    url = "sqlite:///storage/tuner.db"
    studies = _run(str(BIN / "optuna"), "studies", "--storage", url, "-f", "json", cwd=work)
    assert studies.returncode == 0, studies.stderr
    assert [s["name"] for s in json.loads(studies.stdout)] == ["cli_tiny"]
    trials = _run(str(BIN / "optuna"), "trials", "--study-name", "cli_tiny", "--storage", url, "-f", "json", cwd=work)
    assert trials.returncode == 0, trials.stderr
    assert len(json.loads(trials.stdout)) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_optuna_dashboard_serves_the_store(cli_study):
    work, _ = cli_study
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "optuna-dashboard"), "sqlite:///storage/tuner.db", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    payload = json.load(response)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        names = [s["study_name"] for s in payload["study_summaries"]]
        assert names == ["cli_tiny"]
        study_id = payload["study_summaries"][0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_resume_command_after_ctrl_c_adds_no_trials() -> None:
    from tuner._cli_output import resume_command

    assert resume_command(["run", "studies/x.py", "--n-trials", "4", "--device", "0"]) == (
        "tuner run studies/x.py --device 0"
    )
    assert resume_command(["-v", "run", "my study.py", "--n-trials=2"]) == "tuner -v run 'my study.py'"
    assert resume_command(["export", "x"]) is None
