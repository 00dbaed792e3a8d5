"""Warm start: configurations users already ran (the eight hand-run settings) are validated and run first, once."""

from __future__ import annotations

import textwrap

import optuna
import pytest
from conftest import REPO

from tuner import StudySpec, load_study_file, run_study
from tuner.errors import ConfigError
from tuner.study import load_warm_start

GRID = REPO / "search_spaces" / "hand_grid.yaml"


def _spec(warm_start, space: str = "pyannote_scratch.yaml", **overrides) -> StudySpec:
    values = {
        "name": "ws",
        "objective": "pyannote_segmentation",
        "search_space": str(REPO / "search_spaces" / space),
        "warm_start": warm_start,
    }
    values.update(overrides)
    return StudySpec(**values)


def _entries(spec: StudySpec):
    return load_warm_start(spec, spec.load_search_space())


def test_the_hand_grid_loads_and_fits_its_study(monkeypatch):
    monkeypatch.chdir(REPO)  # study files name their files relative to the repository
    spec = load_study_file("studies/pyannote_hand_grid.py")
    entries = _entries(spec)
    assert [e.index for e in entries] == list(range(1, 9))
    assert [e.params["optimizer"] for e in entries] == [
        "Adam",
        "AdamW",
        "RAdam",
        "RAdam",
        "AdamW",
        "NAdam",
        "NAdam",
        "NAdam",
    ]
    assert [e.params["schedule"] for e in entries] == ["constant"] * 3 + ["cosine"] * 5
    assert [e.params["batch_size"] for e in entries] == [32] * 6 + [128, 256]
    assert all(e.params["lr"] == pytest.approx(1e-3) for e in entries)
    assert entries[6].name == "NAdam+cosine 50 epochs batch 128"
    assert spec.n_trials > len(entries)  # the sampler gets trials of its own after the grid


@pytest.mark.bad_input
def test_the_hand_grid_does_not_fit_the_demo_space():
    # the CPU demo space searches batch 16/32/64: the hand runs' batch 128 is refused, naming file, line, entry, key
    with pytest.raises(ConfigError) as error:
        _entries(_spec(str(GRID)))
    message = str(error.value)
    assert f"{GRID}:13: entry 7 of 8 ('NAdam+cosine 50 epochs batch 128'), key 'batch_size'" in message
    assert "128 is not one of the searched choices [16, 32, 64]" in message


def _grid(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{name: typo, optimzer: Adam}",
            r"entry 2 of 2 \('typo'\), key 'optimzer': unknown parameter \(did you mean 'optimizer'\?\)",
        ),
        (
            "{name: fast, lr: 0.5}",
            r"entry 2 of 2 \('fast'\), key 'lr': 0.5 is outside the searched range \[0.0001, 0.01\]",
        ),
        ("{optimizer: SGD}", r"entry 2 of 2, key 'optimizer': unknown value 'SGD'"),
        (
            "{name: big, batch_size: 32}",
            r"entry 2 of 2 \('big'\), key 'batch_size': 32 contradicts the study, which fixes 'batch_size' \(value 8",
        ),
        ("{name: frozen, unfrozen_layers: 1.5}", r"entry 2 of 2 \('frozen'\), key 'unfrozen_layers': expected int"),
        ("{name: again, optimizer: NAdam, lr: 1.0e-3}", r"entry 2 of 2 \('again'\): repeats entry 1 \('first'\)"),
        ("{name: only-fixed, batch_size: 8}", r"entry 2 of 2 \('only-fixed'\): pins no searched parameter"),
        ("NAdam", r"entry 2 of 2: expected a mapping"),
    ],
)
def test_bad_entry_names_file_line_entry_and_key(tmp_path, entry, expected):
    path = _grid(
        tmp_path,
        f"""\
        - {{name: first, optimizer: NAdam, lr: 1.0e-3}}
        - {entry}
    """,
    )
    with pytest.raises(ConfigError, match=rf"^{path}:2: {expected}"):
        _entries(_spec(str(path), fixed={"batch_size": 8}))


@pytest.mark.bad_input
def test_bad_inline_entry_names_the_study(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^study 'ws' warm_start: entry 1 of 1, key 'weight_decay': .* outside the searched range"
    ):
        _entries(_spec([{"weight_decay": 1.0}]))


@pytest.mark.bad_input
def test_key_line_is_named_in_block_style(tmp_path):
    path = _grid(
        tmp_path,
        """\
        - name: ok
          optimizer: Adam
        - name: bad
          optimizer: Adam
          schedule: linear
    """,
    )
    with pytest.raises(
        ConfigError, match=rf"^{path}:5: entry 2 of 2 \('bad'\), key 'schedule': unknown value 'linear'"
    ):
        _entries(_spec(str(path)))


@pytest.mark.bad_input
def test_conditional_parameter_must_apply():
    # an inline space: weight_decay is searched only for AdamW
    space = {
        "optimizer": {"choices": ["Adam", "AdamW"]},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True, "when": {"optimizer": ["AdamW"]}},
    }
    spec = _spec(
        [
            {"optimizer": "AdamW", "weight_decay": 1e-3},
            {"weight_decay": 1e-3},
            {"optimizer": "Adam", "weight_decay": 1e-3},
        ]
    )
    spec = spec.override(search_space=space)
    with pytest.raises(
        ConfigError,
        match=(
            r"^study 'ws' warm_start: entry 3 of 3, key 'weight_decay': 'weight_decay' is searched only when "
            r"optimizer is one of \['AdamW'\], and this entry has optimizer='Adam'"
        ),
    ):
        _entries(spec)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("content", "expected"),
    [("{optimizer: Adam}", r"a warm-start file is a list of configurations"), ("- [unclosed", r"invalid YAML")],
)
def test_bad_grid_file(tmp_path, content, expected):
    with pytest.raises(ConfigError, match=expected):
        _entries(_spec(str(_grid(tmp_path, content))))


@pytest.mark.bad_input
def test_missing_grid_file_and_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"warm_start file not found: .*nowhere.yaml"):
        _entries(_spec(str(tmp_path / "nowhere.yaml")))
    with pytest.raises(ConfigError, match=r"'warm_start' must be the path of a YAML file or a list"):
        _spec(42)


@pytest.mark.bad_input
def test_grid_is_checked_before_the_store_is_touched(make_spec, tmp_path):
    db = tmp_path / "never.db"
    with pytest.raises(ConfigError, match="key 'lr'"):
        run_study(make_spec(warm_start=[{"lr": 5.0}]), f"sqlite:///{db}", workdir=tmp_path, show_progress=False)
    assert not db.exists()


WARM = [
    {"name": "seed NAdam+cosine", "optimizer": "NAdam", "lr": 2.0e-3, "schedule": "cosine"},
    {"optimizer": "RAdam", "lr": 5.0e-4, "schedule": "constant", "unfrozen_layers": 1, "weight_decay": 1.0e-4},
]


def test_warm_start_runs_first_and_only_once(make_spec, storage_url, tmp_path):
    spec = make_spec(max_epochs=1, warm_start=WARM, sampler=optuna.samplers.RandomSampler(seed=0))
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False)  # budget 2: just the warm start
    study = optuna.load_study(study_name="tiny", storage=storage_url)
    first, second = study.trials
    for trial, entry in zip((first, second), WARM):
        given = {k: v for k, v in entry.items() if k != "name"}
        assert {k: trial.params[k] for k in given} == pytest.approx(given)
        assert trial.state == optuna.trial.TrialState.COMPLETE
    assert first.user_attrs["warm_start"] == "seed NAdam+cosine"
    assert (
        second.user_attrs["warm_start"]
        == "optimizer=RAdam, lr=0.0005, schedule=constant, unfrozen_layers=1, weight_decay=0.0001"
    )
    assert {"unfrozen_layers", "weight_decay"} <= set(first.params)  # not given: sampled as usual
    assert first.user_attrs["config"]["batch_size"] == 8  # the study's fixed value still applies
    assert study.user_attrs["warm_start"] == {
        "source": "inline",
        "entries": ["seed NAdam+cosine", second.user_attrs["warm_start"]],
    }

    # resumed (a second worker or a re-run): the sampler proposes, nothing is enqueued again
    run_study(spec, storage_url, n_trials=1, workdir=tmp_path, show_progress=False)
    trials = optuna.load_study(study_name="tiny", storage=storage_url).trials
    assert len(trials) == 3 and "warm_start" not in trials[2].user_attrs
    assert all(t.state != optuna.trial.TrialState.WAITING for t in trials)
