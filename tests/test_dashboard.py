"""optuna-dashboard on tuner's store: trial and study notes, the report figures, `tuner dashboard`, and
what a person sees in a real (headless) browser."""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from browser import ARTIFACTS, dump_dom, ink_fraction, screenshot

from tuner.reports import notes as note_writer
from tuner.reports import serving
from tuner.reports.dashboard_internals import DashboardTrial
from tuner.reports.notes import (
    attach_figures,
    save_study_note,
    save_trial_note,
    study_note,
    trial_note,
)
from tuner.store.records import epochs_of

BIN = Path(sys.executable).parent
optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------ notes, figures


def _study(storage: str | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="notes", direction="minimize", storage=storage)
    for key, value in {
        "objective": "pyannote_segmentation",
        "metric": "DER",
        "direction": "minimize",
        "components": ["Confusion", "Miss"],
        "max_epochs": 3,
        "n_trials": 4,
        "baseline": {"DER": 1.25, "Confusion": 0.5, "Miss": 0.5},
    }.items():
        study.set_user_attr(key, value)
    return study


def _epoch(der: float, lr: float) -> dict[str, float]:
    return {"DER": der, "Confusion": der / 4, "Miss": der / 2, "loss/train": 0.7, "lr": lr, "seconds": 1.5}


def _trial(state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE, **extra) -> optuna.trial.FrozenTrial:
    distributions = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "optimizer": optuna.distributions.CategoricalDistribution(["Adam", "AdamW"]),
    }
    user_attrs = {
        "config": {"optimizer": "AdamW", "lr": 0.00123, "batch_size": 16, "warmup_epochs": 0},
        "seed": 7,
        "max_epochs": 3,
        "epoch/000": _epoch(0.5625, 0.00123),
        "epoch/001": _epoch(0.4375, 0.0006),
        "best_epoch": 1,
        "epochs_run": 2,
        "seconds": 12.25,
    }
    user_attrs.update(extra.pop("user_attrs", {}))
    trial = optuna.trial.create_trial(
        state=state,
        params={"lr": 0.00123, "optimizer": "AdamW"},
        distributions=distributions,
        user_attrs=user_attrs,
        value=0.4375 if state == optuna.trial.TrialState.COMPLETE else None,
        **extra,
    )
    trial.number = 0  # as the study numbers it (create_trial leaves -1)
    return trial


def test_trial_note_has_the_configuration_seed_state_and_one_row_per_epoch():
    note = trial_note(_trial(), _study())
    assert "Trial 0: complete" in note
    assert "best DER **0.4375** at epoch 2" in note and "seed 7" in note and "2 of 3 epochs" in note
    # every parameter, searched or fixed, with its value
    assert "| optimizer | AdamW | searched |" in note and "| lr | 0.00123 | searched |" in note
    assert "| batch_size | 16 | fixed |" in note and "| warmup_epochs | 0 | fixed |" in note
    # the epoch table: metric, components and lr from the stored epoch/NNN records, the best epoch marked
    assert "| epoch | DER | Confusion | Miss | lr |" in note
    assert "| 1 | 0.5625 | 0.1406 | 0.2812 | 0.00123 |" in note
    assert "| 2 (best) | 0.4375 | 0.1094 | 0.2188 | 0.0006 |" in note


def test_trial_note_of_pruned_and_failed_trials():
    study = _study()
    pruned = trial_note(_trial(optuna.trial.TrialState.PRUNED, user_attrs={"best_epoch": None}), study)
    assert "Trial 0: pruned" in pruned and "best DER **0.4375** at epoch 2" in pruned  # from the epoch records
    failed = trial_note(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            # where the runner writes it (tuner.store.records.fail_trial): a user attribute
            user_attrs={
                "config": {"lr": 0.01},
                "seed": 3,
                "fail_reason": "RuntimeError: CUDA out of memory\nTraceback",
            },
        ),
        study,
    )
    assert ": fail" in failed and "Failed: `RuntimeError: CUDA out of memory`" in failed
    assert "no DER recorded" in failed and "| lr | 0.0100 | fixed |" in failed and "| epoch |" not in failed
    # a completed retry that inherited its predecessor's reason did not fail
    retried = trial_note(_trial(user_attrs={"fail_reason": "interrupted (Ctrl-C)"}), study)
    assert "Trial 0: complete" in retried and "Failed" not in retried and "interrupted" not in retried


def test_notes_are_saved_for_the_dashboard_and_keep_what_a_person_added():
    import optuna_dashboard

    study = _study()
    frozen = _trial()
    study.add_trial(frozen)
    stored = study.get_trials()[0]
    body = save_trial_note(study, stored)
    assert "| 2 (best) | 0.4375 |" in body
    ref = DashboardTrial.of(study, stored)
    assert optuna_dashboard.get_note(ref) == body
    optuna_dashboard.save_note(ref, body + "\nlooks overfit -- Ana\n")  # as if typed in the dashboard
    again = save_trial_note(study, stored)
    assert again.count("Trial 0: complete") == 1 and again.rstrip().endswith("looks overfit -- Ana")

    note = save_study_note(study)
    assert optuna_dashboard.get_note(study) == note
    assert "Study notes" in note and "| untrained model | 1.2500 | 0.5000 | 0.5000 |" in note
    assert "best: trial 0, epoch 2" in note and "tuner export notes" in note
    assert "No completed trial yet" in study_note(_study())


def test_figures_replace_earlier_ones_and_stale_ones_go(tmp_path):
    import plotly.graph_objects as go
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    study = _study(f"sqlite:///{tmp_path / 'figures.db'}")

    def shown() -> dict[str, str]:
        return get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))

    big = go.Figure(go.Scatter(y=list(range(2000))), layout={"title": {"text": "big"}})  # several 2 kB chunks
    attach_figures(study, {"history": big, "per objective": go.Figure(layout={"title": {"text": "per"}})})
    assert sorted(shown()) == ["tuner-history", "tuner-per-objective"]
    ids = attach_figures(study, {"history": go.Figure(go.Bar(y=[1, 2]), layout={"title": {"text": "small"}})})
    assert ids == ["tuner-history"] and list(shown()) == ["tuner-history"]
    assert json.loads(shown()["tuner-history"])["layout"]["title"]["text"] == "small"


def test_a_dashboard_failure_never_breaks_a_study(caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("store is read-only")

    monkeypatch.setattr(note_writer, "save_trial_note", broken)
    monkeypatch.setattr(note_writer, "attach_figures", broken)
    monkeypatch.setattr(note_writer, "save_study_note", broken)
    study = _study()
    note_writer.publish_trial_note(study, _trial())
    note_writer.publish_study(study)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all("store is read-only" in w for w in warnings)


# --------------------------------------------------------------------------------- tuner dashboard


def test_dashboard_command_help_and_errors(tmp_path, monkeypatch, capsys):
    from tuner.cli import main

    main(["dashboard", "--help"])
    out = capsys.readouterr().out
    assert "optuna-dashboard sqlite:///storage/tuner.db" in out and "--port" in out and "--host" in out

    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert exit_.value.code == 2 and "no trial store at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()

    # the address is printed, the password is not; Ctrl+C stops the server quietly
    served = {}

    class Server:
        server_port = 9999

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            served["closed"] = True

    monkeypatch.setattr(serving, "open_storage", lambda url, heartbeat: ("storage", url))
    monkeypatch.setattr("optuna_dashboard.wsgi", lambda storage, artifact_store=None: ("app", storage))
    monkeypatch.setattr(
        serving, "_make_server", lambda host, port, app: served.update(host=host, port=port, app=app) or Server()
    )
    main(["dashboard", "--storage", "postgresql://tuner:s3cret@db-host/tuner", "--port", "9999"])
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9999/dashboard/" in out and "postgresql://tuner:***@db-host/tuner" in out
    assert "s3cret" not in out and served["port"] == 9999 and served["host"] == "127.0.0.1" and served["closed"]
    served_app = served["app"]  # optuna-dashboard's app behind tuner's study request (StudyDetailFirst)
    assert isinstance(served_app, serving.StudyDetailFirst) and served_app.app[0] == "app"
    storage = served_app.app[1]  # the store behind Optuna's cache layer (tuner.store.optuna_internals.cached)
    assert served_app.storage is storage and storage._backend == ("storage", "postgresql://tuner:s3cret@db-host/tuner")


# ----------------------------------------------------------------------- a real study in a browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _text(dom: str) -> str:
    """The visible text of a dumped DOM, whitespace collapsed."""
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_real_study_in_the_dashboard(make_spec, tmp_path):
    import optuna_dashboard

    from tuner.reports.figures import study_figures
    from tuner.reports.publish import DashboardPublisher
    from tuner.runner import run_study

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = make_spec(
        name="dash_tiny",
        max_epochs=1,
        sampler=optuna.samplers.RandomSampler(seed=0),
        trainer={"limit_train_batches": 2},
    )
    # the publisher `tuner run` passes to the runner
    study = run_study(spec, url, workdir=tmp_path / "work", show_progress=False, callbacks=[DashboardPublisher()])
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]

    # what the run left for the dashboard: a note per trial, the study note, the report's figures
    notes = [optuna_dashboard.get_note(DashboardTrial.of(study, t)) for t in trials]
    for trial, note in zip(trials, notes):
        der = epochs_of(trial)[0]["DER"]
        assert f"Trial {trial.number}: complete" in note and f"seed {trial.user_attrs['seed']}" in note
        assert f"| 1 (best) | {der:.4f} |" in note
        assert f"| lr | {trial.user_attrs['config']['lr']:.3g} | searched |" in note
    assert "Study dash_tiny" in optuna_dashboard.get_note(study)
    figures = study_figures(study)
    figure_ids = sorted(note_writer._figure_id(k) for k in figures)
    titles = [f.layout.title.text for f in figures.values() if f.layout.title.text]
    assert figure_ids

    port = _free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(BIN / "tuner"), "dashboard", "--storage", url, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                summaries = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.time() < deadline, log.read_text()
                time.sleep(0.3)
        assert f"{base}/dashboard/" in log.read_text()
        assert [s["study_name"] for s in summaries] == ["dash_tiny"]
        study_id = summaries[0]["study_id"]

        # the JSON the single-page app renders from
        detail = _get(f"{base}/api/studies/{study_id}")
        assert [t["note"]["body"] for t in detail["trials"]] == notes
        assert "Study dash_tiny" in detail["note"]["body"]
        assert sorted(g["id"] for g in detail["plotly_graph_objects"]) == figure_ids

        # what a person sees: the study list, the study page (figures), the trial list with the selected
        # trial's note, the study note; browsers run side by side (the server is threaded)
        pages = {
            "list": "/dashboard/",
            "study": f"/dashboard/studies/{study_id}",
            "trial0": f"/dashboard/studies/{study_id}/trials?numbers=0",
            "note": f"/dashboard/studies/{study_id}/note",
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / "dashboard.png"
        png.unlink(missing_ok=True)
        with ThreadPoolExecutor(len(pages) + 2) as pool:
            doms = {name: pool.submit(dump_dom, base + path, budget_ms=20000) for name, path in pages.items()}
            shots = [
                pool.submit(screenshot, base + pages["study"], png, height=2400, budget_ms=20000),
                pool.submit(
                    screenshot, base + pages["trial0"], ARTIFACTS / "dashboard_trial.png", height=1600, budget_ms=20000
                ),
            ]
            doms = {name: future.result() for name, future in doms.items()}
            for future in shots:
                future.result()
        text = {name: _text(dom) for name, dom in doms.items()}

        assert "dash_tiny" in text["list"]
        assert "dash_tiny" in text["study"] and "trial #0" in text["study"] and "trial #1" in text["study"]
        for figure_id in figure_ids:  # the report's figures, drawn by plotly on the study page
            assert re.search(
                rf'id="user-defined-plot:{figure_id}"[^>]*>\s*<div class="plot-container', doms["study"]
            ), figure_id
        for title in titles:
            assert _text(title) in text["study"], title
        page = text["trial0"]
        assert "Trial 0" in page and "Trial 1" in page
        # the selected trial's note, rendered from markdown (its tables are tables)
        assert "Trial 0: complete" in page and f"seed {trials[0].user_attrs['seed']}" in page
        assert f"1 (best) {epochs_of(trials[0])[0]['DER']:.4f}" in page
        assert f"lr {trials[0].user_attrs['config']['lr']:.3g} searched" in page and "batch_size 8 fixed" in page
        assert "| epoch |" not in page and "**" not in page
        assert "Study dash_tiny" in text["note"] and "untrained model" in text["note"]
        assert ink_fraction(png) > 0.02
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
