"""One study, one problem (tuner.identity): a stored study opened again with a study file that defines another
problem is refused, one line per difference, before anything is written; --extend-space widens its search space
and records it; changes that do not define the problem (budget, seed, runtime options) are allowed."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution

from tuner import StudySpec, run_study
from tuner.confirm import confirm_study, confirmation_name
from tuner.errors import ConfigError, StudyChanged
from tuner.identity import differences
from tuner.objectives.synthetic import SyntheticRegression
from tuner.search_space import SearchSpace
from tuner.store import records
from tuner.store.connect import load_existing_study, mask_url
from tuner.store.queries import queries_of

SMALL = {"n_train": 64, "n_val": 32, "n_features": 4, "hidden": [8, 8]}
SPACE = {
    "optimizer": {"choices": ["Adam", "AdamW"]},
    "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
    "batch_size": 32,
}


class LastChoice(optuna.samplers.RandomSampler):
    """Random, but always the last of a categorical parameter's choices (the one an extension added)."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, CategoricalDistribution):
            return param_distribution.choices[-1]
        return super().sample_independent(study, trial, param_name, param_distribution)


def _spec(space=None, **overrides):
    values = {
        "name": "ident",
        "objective": "synthetic",
        "data": None,
        "options": SMALL,
        "search_space": SPACE if space is None else space,
        "n_trials": 1,
        "max_epochs": 1,
        "sampler": optuna.samplers.RandomSampler(seed=0),
    }
    return StudySpec(**{**values, **overrides})


def _run(spec, url, tmp_path, **kwargs):
    return run_study(spec, url, workdir=tmp_path, show_progress=False, device="cpu", **kwargs)


def _space(**changes):
    return {**SPACE, **changes}


def _snapshot(url: str, name: str = "ident") -> dict:
    """Every row the store keeps of study ``name`` (attributes, metric names, trials, parameters), as raw text."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:

            def rows(sql: str, **params):
                return [tuple(map(str, row)) for row in connection.execute(sa.text(sql), params)]

            (study_id,) = connection.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :name"), {"name": name}
            ).one()
            return {
                "studies": rows("SELECT study_id, study_name FROM studies ORDER BY study_id"),
                "user": rows(
                    "SELECT key, value_json FROM study_user_attributes WHERE study_id = :s ORDER BY key", s=study_id
                ),
                "system": rows(
                    "SELECT key, value_json FROM study_system_attributes WHERE study_id = :s ORDER BY key", s=study_id
                ),
                "directions": rows("SELECT objective, direction FROM study_directions WHERE study_id = :s", s=study_id),
                "trials": rows("SELECT trial_id, number, state FROM trials WHERE study_id = :s ORDER BY 1", s=study_id),
                "params": rows(
                    "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p "
                    "JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = :s ORDER BY 1, 2",
                    s=study_id,
                ),
            }
    finally:
        engine.dispose()


@pytest.fixture
def stored(tmp_path):
    """A SQLite store holding study 'ident' (the synthetic objective over SPACE), one trial run."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    _run(_spec(), url, tmp_path)
    return url


def _refused(spec, url, tmp_path, **kwargs) -> str:
    """Open ``spec``'s stored study again: refused, with nothing written; the message."""
    before = _snapshot(url)
    with pytest.raises(StudyChanged) as info:
        _run(spec, url, tmp_path, **kwargs)
    assert _snapshot(url) == before, "a refused open wrote to the store"
    message = str(info.value)
    assert f"study 'ident' in {mask_url(url)}" in message and "--study-name" in message
    assert "dynamic value space" not in message and "Traceback" not in message
    return message


# -- what is allowed -------------------------------------------------------------------------------------------


def test_an_unchanged_study_file_reopens_and_the_budget_seed_and_runtime_options_may_change(stored, tmp_path):
    problem = records.StudyRecord.of(load_existing_study("ident", stored)).problem
    assert problem is not None and problem["max_epochs"] == 1 and problem["options"]["n_train"] == 64
    _run(_spec(), stored, tmp_path, n_trials=1)  # the same file: one more trial
    changed = _spec(n_trials=3, seed=7, options={**SMALL, "sleep_per_epoch": 0.0}, precision="bf16-mixed")
    _run(changed, stored, tmp_path)
    study = load_existing_study("ident", stored)
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    record = records.StudyRecord.of(study)
    assert record.problem == problem and record.space_extensions == ()
    # choices in another order are the same parameter: the study keeps its own order
    _run(_spec(_space(optimizer={"choices": ["AdamW", "Adam"]})), stored, tmp_path, n_trials=1)
    (order,) = {
        json.loads(d)["attributes"]["choices"].__str__() for d in queries_of(study).param_distributions("optimizer")
    }
    assert order == str(["Adam", "AdamW"])


# -- what is refused --------------------------------------------------------------------------------------------


def test_changed_options_are_refused_naming_each_and_nothing_is_written(storage_url, tmp_path):
    _run(_spec(), storage_url, tmp_path)
    options = {**SMALL, "n_train": 128, "noise": 0.5, "sleep_per_epoch": 0.1}  # sleep_per_epoch: allowed
    message = _refused(_spec(options=options), storage_url, tmp_path)
    lines = message.splitlines()
    assert "  - options['n_train']: stored 64, now 128" in lines
    assert "  - options['noise']: stored 0.1, now 0.5" in lines
    assert "sleep_per_epoch" not in message
    assert len(lines) == 4  # the heading, one line per difference, the ways out


def test_changed_max_epochs_is_refused(stored, tmp_path):
    message = _refused(_spec(max_epochs=2), stored, tmp_path)
    assert "  - max_epochs: stored 1, now 2 (each trial's epochs" in message
    assert "--extend-space" not in message  # not a search-space change


def test_changed_categorical_choices_are_refused_with_a_clear_message(stored, tmp_path):
    message = _refused(_spec(_space(optimizer={"choices": ["Adam", "RAdam"]})), stored, tmp_path)
    assert (
        "  - search space 'optimizer': stored choices ['Adam', 'AdamW'], now choices ['Adam', 'RAdam'] "
        "(not an extension: drops ['AdamW'])"
    ) in message
    # the same with --extend-space: dropping a choice is never an extension
    assert "--extend-space accepts only" in _refused(
        _spec(_space(optimizer={"choices": ["Adam", "RAdam"]})), stored, tmp_path, extend_space=True
    )
    # adding choices is one, offered but not taken without the flag
    message = _refused(_spec(_space(optimizer={"choices": ["Adam", "AdamW", "NAdam"]})), stored, tmp_path)
    assert "(extension: adds ['NAdam'])" in message and "pass --extend-space" in message


def test_a_widened_range_is_refused_without_extend_space_and_recorded_with_it(stored, tmp_path):
    wider = _spec(_space(lr={"low": 1.0e-4, "high": 1.0e-2, "log": True}))
    message = _refused(wider, stored, tmp_path)
    assert (
        "  - search space 'lr': stored range [0.001, 0.01] log, now range [0.0001, 0.01] log "
        "(extension: widens the range)"
    ) in message
    _run(wider, stored, tmp_path, n_trials=1, extend_space=True)
    study = load_existing_study("ident", stored)
    record = records.StudyRecord.of(study)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    (extension,) = record.space_extensions
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", extension["at"])
    assert extension["changes"] == {
        "lr": {"old": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "new": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
    }
    assert record.search_space["lr"]["low"] == 1.0e-4 and record.problem["search_space"]["lr"]["low"] == 1.0e-4
    # every trial's lr now carries the wider distribution (one distribution per parameter for Optuna and reports)
    assert {t.distributions["lr"] for t in study.trials} == {FloatDistribution(1.0e-4, 1.0e-2, log=True)}
    # the extended file is now the study's: it reopens without the flag
    _run(wider, stored, tmp_path, n_trials=1)
    assert len(load_existing_study("ident", stored).trials) == 3


def test_added_choices_with_extend_space_run_where_optuna_would_refuse_them(stored, tmp_path):
    more = _spec(_space(optimizer={"choices": ["NAdam", "Adam", "AdamW"]}), sampler=LastChoice(seed=0))
    _run(more, stored, tmp_path, n_trials=1, extend_space=True)
    study = load_existing_study("ident", stored)
    first, second = study.trials
    assert second.state.name == "COMPLETE" and second.params["optimizer"] == "NAdam"
    # the study's order first, the new choice after: the first trial's stored choice (its position) is unchanged
    assert second.distributions["optimizer"] == CategoricalDistribution(["Adam", "AdamW", "NAdam"])
    assert first.distributions["optimizer"] == second.distributions["optimizer"]
    assert first.params["optimizer"] == first.user_attrs["config"]["optimizer"]


def test_a_narrowed_range_is_refused_even_with_extend_space(stored, tmp_path):
    narrower = _spec(_space(lr={"low": 2.0e-3, "high": 3.0e-2, "log": True}))
    message = _refused(narrower, stored, tmp_path, extend_space=True)
    assert "(not an extension: narrows the range)" in message and "--extend-space accepts only" in message


def test_another_objective_is_refused_and_the_stored_metric_name_is_untouched(tmp_path):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    # a study `tuner run` created for the diarization objective
    study = optuna.create_study(study_name="ident", storage=url, direction="minimize")
    records.write_study(study, {"objective": "pyannote_segmentation", "metric": "DER", "direction": "minimize"})
    records.name_metric(study, "DER")
    message = _refused(_spec(), url, tmp_path)
    assert "was created for objective 'pyannote_segmentation', not 'synthetic'" in message
    assert load_existing_study("ident", url).metric_names == ["DER"]


# -- studies from an older tuner ---------------------------------------------------------------------------------


def _forget_problem(url: str) -> None:
    """Make the stored study look like one an older tuner wrote: no fingerprint, options without 'split'."""
    study = load_existing_study("ident", url)
    options = dict(records.StudyRecord.of(study).options)
    options.pop("split")
    study.set_user_attr("options", options)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM study_user_attributes WHERE key = 'problem'"))
    engine.dispose()


def test_a_study_from_an_older_tuner_is_compared_on_its_record_and_gets_its_fingerprint(stored, tmp_path):
    _forget_problem(stored)
    assert records.StudyRecord.of(load_existing_study("ident", stored)).problem is None
    assert "  - max_epochs: stored 1, now 2" in _refused(_spec(max_epochs=2), stored, tmp_path)
    _run(_spec(), stored, tmp_path, n_trials=1)  # an option it did not record counts as its default
    problem = records.StudyRecord.of(load_existing_study("ident", stored)).problem
    assert problem is not None and problem["options"]["split"] == "development"


# -- the command line, and the confirmation study ----------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_tuner_run_prints_one_line_per_difference_and_extends_with_the_flag(tmp_path, capsys, monkeypatch):
    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ident.py"

    def write(space, max_epochs=1):
        path.write_text(
            "from tuner import StudySpec\n"
            f"study = StudySpec(name='ident', objective='synthetic', data=None, options={SMALL!r}, "
            f"search_space={space!r}, n_trials=1, max_epochs={max_epochs})\n"
        )

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    common = ["--storage", url, "--workdir", str(tmp_path), "--device", "cpu"]
    write(SPACE)
    main(["run", str(path), *common])
    capsys.readouterr()
    write(_space(lr={"low": 1.0e-3, "high": 0.1, "log": True}), max_epochs=2)
    with pytest.raises(SystemExit) as info:
        main(["run", str(path), *common, "--extend-space"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    error = err[err.index("error: ") :]
    assert error.startswith(f"error: {path}: study 'ident' in {url} was created for another problem")
    assert "  - max_epochs: stored 1, now 2" in err and "(extension: widens the range)" in err
    write(_space(lr={"low": 1.0e-3, "high": 0.1, "log": True}))
    main(["run", str(path), *common, "--extend-space", "--n-trials", "1"])
    assert len(records.StudyRecord.of(load_existing_study("ident", url)).space_extensions) == 1


def test_the_confirmation_study_follows_an_extended_search(stored, tmp_path):
    spec = _spec()
    confirm_study(spec, stored, top=1, seeds=1, workdir=tmp_path, device="cpu", show_progress=False)
    companion = load_existing_study(confirmation_name("ident"), stored)
    assert records.StudyRecord.of(companion).problem["search_space"] == SPACE
    more = _spec(_space(optimizer={"choices": ["Adam", "AdamW", "NAdam"]}), sampler=LastChoice(seed=0))
    _run(more, stored, tmp_path, n_trials=1, extend_space=True)  # a search trial on NAdam
    ranking = confirm_study(more, stored, top=2, seeds=1, workdir=tmp_path, device="cpu", show_progress=False)
    assert ranking.pending == 0
    companion = load_existing_study(confirmation_name("ident"), stored)
    record = records.StudyRecord.of(companion)
    assert len(record.space_extensions) == 1 and record.problem["search_space"]["optimizer"]["choices"][-1] == "NAdam"
    assert {t.params["optimizer"] for t in companion.trials} <= {"Adam", "AdamW", "NAdam"}
    assert all(t.state.name == "COMPLETE" for t in companion.trials) and len(companion.trials) == 2
    # another problem is refused for the confirmation too (`tuner confirm` reads the search's record)
    with pytest.raises(StudyChanged, match=r"max_epochs: stored 1, now 2"):
        confirm_study(_spec(max_epochs=2), stored, top=1, seeds=1, workdir=tmp_path, device="cpu")


# -- the comparison itself ---------------------------------------------------------------------------------------


def _differences(old_space, new_space, **current):
    objective = SyntheticRegression(None, None, SMALL)
    space = SearchSpace.from_dict(new_space)
    stored = {"search_space": old_space, "pretrained": None, "checkpoint": None}
    return differences(
        stored, {"search_space": new_space, "pretrained": None, "checkpoint": None, **current}, objective, space
    )


@pytest.mark.parametrize(
    ("old", "new", "extension", "note"),
    [
        (
            {"lr": {"low": 0.001, "high": 0.01}},
            {"lr": {"low": 0.001, "high": 0.01, "log": True}},
            False,
            "another scale",
        ),
        (
            {"batch_size": {"low": 16, "high": 64, "step": 16}},
            {"batch_size": {"low": 16, "high": 128, "step": 16}},
            True,
            "widens",
        ),
        (
            {"batch_size": {"low": 16, "high": 64, "step": 16}},
            {"batch_size": {"low": 8, "high": 64, "step": 16}},
            False,
            "grid",
        ),
        (
            {"batch_size": {"low": 16, "high": 64, "step": 16}},
            {"batch_size": {"low": 16, "high": 64, "step": 8}},
            False,
            "step",
        ),
        ({"batch_size": 32}, {"batch_size": {"choices": [16, 32, 64]}}, True, "fixed at 32, which the new space holds"),
        ({}, {"warmup_epochs": {"low": 0, "high": 2}}, True, "fixed at 0"),  # left out: fixed at its default
        ({"batch_size": 32}, {"batch_size": {"choices": [16, 64]}}, False, "leaves out"),
        ({"batch_size": {"choices": [16, 32]}}, {"batch_size": 32}, False, "fixes a searched parameter"),
        ({"warmup_epochs": 1}, {"warmup_epochs": 2}, False, "another fixed value"),
        ({"batch_size": {"choices": [16, 32]}}, {"batch_size": {"low": 16, "high": 32}}, False, "another kind"),
    ],
)
def test_what_extends_a_search_space(old, new, extension, note):
    (difference,) = _differences(old, new)
    assert difference.extension is extension and note in difference.note


def test_the_same_space_written_otherwise_and_the_same_checkpoint_elsewhere_are_the_same_problem():
    assert (
        _differences(
            {"warmup_epochs": 0, "optimizer": {"choices": ["Adam", "NAdam"]}},
            {"optimizer": {"choices": ["NAdam", "Adam"]}},
        )
        == []
    )
    objective = SyntheticRegression(None, None, SMALL)
    space = SearchSpace.from_dict({})
    stored = {"pretrained": "segmentation-3.0", "checkpoint": "ab" * 32}
    assert (
        differences(stored, {"pretrained": "/models/pytorch_model.bin", "checkpoint": "ab" * 32}, objective, space)
        == []
    )
    (other,) = differences(stored, {"pretrained": "segmentation-3.0", "checkpoint": "cd" * 32}, objective, space)
    assert (
        other.line
        == "pretrained: stored 'segmentation-3.0' (sha256 abababababab), now 'segmentation-3.0' (sha256 cdcdcdcdcdcd)"
    )


def test_a_store_without_sql_cannot_have_its_space_extended():
    study = optuna.create_study()
    with pytest.raises(ConfigError, match="not in an SQL store"):
        queries_of(study).set_param_distribution("lr", "{}")
