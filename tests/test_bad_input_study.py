"""Bad study files and search spaces, for each objective: misspelled StudySpec keywords and YAML keys, YAML
syntax errors and unknown optimizers are ConfigErrors naming the file, the line or key, and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from tuner.errors import ConfigError
from tuner.objectives.base import get_objective_class
from tuner.study import StudySpec, load_study_file

pytestmark = pytest.mark.bad_input

SPACES = {
    "pyannote_segmentation": REPO / "search_spaces" / "pyannote_scratch.yaml",
    "wavlm_sv": REPO / "search_spaces" / "wavlm_sv.yaml",
    "sepformer_separation": REPO / "search_spaces" / "sepformer.yaml",
}


def _study_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_study.py"
    path.write_text("from tuner import StudySpec\n\n" + body, encoding="utf-8")
    return path


def _study_file_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    return str(info.value)


def _space_error(objective: str, space: str | Path | dict, **spec: object) -> str:
    """The ConfigError of loading ``space`` (a file or inline content) as ``objective``'s search space."""
    study = StudySpec(name="x", objective=objective, search_space=space, **spec)
    with pytest.raises(ConfigError) as info:
        study.load_search_space(get_objective_class(objective).params)
    return str(info.value)


# ------------------------------------------------------------------------------------ study files


@pytest.mark.parametrize("objective", sorted(SPACES))
def test_misspelled_studyspec_keyword_names_its_line(tmp_path: Path, objective: str) -> None:
    path = _study_file(
        tmp_path,
        "study = StudySpec(\n"
        "    name='x',\n"
        f"    objective={objective!r},\n"
        f"    serch_space={str(SPACES[objective])!r},\n"
        "    n_trials=3,\n"
        ")\n",
    )
    message = _study_file_error(path)
    assert message.startswith(f"{path}:6: StudySpec has no keyword 'serch_space' (did you mean 'search_space'?)")
    assert "Its keywords: name, objective, search_space, data" in message


def test_misspelled_budget_keyword(tmp_path: Path) -> None:
    path = _study_file(
        tmp_path, "study = StudySpec(name='x', objective='wavlm_sv', search_space='s.yaml', max_epoch=3)\n"
    )
    message = _study_file_error(path)
    assert message.startswith(f"{path}:3: StudySpec has no keyword 'max_epoch' (did you mean 'max_epochs'?)")


def test_studyspec_without_its_search_space(tmp_path: Path) -> None:
    path = _study_file(tmp_path, "study = StudySpec(name='x', objective='sepformer_separation')\n")
    message = _study_file_error(path)
    assert message.startswith(f"{path}:3: StudySpec needs 'search_space'")
    assert "name, objective and search_space" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("'wavlm_sv_'", "did you mean 'wavlm_sv'"), ("'sepformer'", "Available: pyannote_segmentation")],
)
def test_unknown_objective_in_a_study_file(tmp_path: Path, value: str, expected: str) -> None:
    from tuner.runner import prepare_objective

    path = _study_file(tmp_path, f"study = StudySpec(name='x', objective={value}, search_space='s.yaml')\n")
    with pytest.raises(ConfigError) as info:
        prepare_objective(load_study_file(path))
    assert f"unknown objective {value}" in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    ("objective", "key", "suggestion"),
    [
        ("pyannote_segmentation", "duraton", "duration"),
        ("wavlm_sv", "crop_secs", "crop_seconds"),
        ("sepformer_separation", "train_cvs", "train_csv"),
    ],
)
def test_misspelled_objective_option(tmp_path: Path, objective: str, key: str, suggestion: str) -> None:
    """Options are checked when the objective is made, before any data is read; the message names the study file."""
    from tuner.runner import prepare_objective

    path = _study_file(
        tmp_path,
        f"study = StudySpec(name='x', objective={objective!r}, search_space={str(SPACES[objective])!r},\n"
        f"                  data='/nonexistent', options={{{key!r}: 1}})\n",
    )
    with pytest.raises(ConfigError) as info:
        prepare_objective(load_study_file(path))
    message = str(info.value)
    assert message.startswith(
        f"{path}: study 'x': unknown option(s) ['{key}'] for objective '{objective}' (did you mean '{suggestion}'?)"
    )
    assert "Known options: " in message and suggestion in message


# ------------------------------------------------------------------------------------ search spaces


@pytest.mark.parametrize(
    ("objective", "text", "key", "suggestion"),
    [
        ("pyannote_segmentation", "optimiser: Adam\n", "optimiser", "optimizer"),
        ("pyannote_segmentation", "unfrozen_layer: {low: 0, high: 2}\n", "unfrozen_layer", "unfrozen_layers"),
        ("wavlm_sv", "margn: {low: 0.1, high: 0.3}\n", "margn", "margin"),
        ("wavlm_sv", "batchsize: {choices: [8, 16]}\n", "batchsize", "batch_size"),
        ("sepformer_separation", "clpi: 5.0\n", "clpi", "clip"),
        ("sepformer_separation", "weight_decy: 0.0\n", "weight_decy", "weight_decay"),
    ],
)
def test_misspelled_search_space_key(tmp_path: Path, objective: str, text: str, key: str, suggestion: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    message = _space_error(objective, path)
    assert message.startswith(f"{path}: unknown key '{key}' (did you mean '{suggestion}'?)")
    assert "Known keys: optimizer, lr" in message


def test_an_objective_parameter_is_unknown_to_another_objective(tmp_path: Path) -> None:
    """'clip' belongs to SepFormer: a speaker-verification space naming it is refused, and 'clip' is not
    offered among its known keys."""
    path = tmp_path / "space.yaml"
    path.write_text("clip: {low: 1.0, high: 10.0}\n", encoding="utf-8")
    message = _space_error("wavlm_sv", path)
    assert message.startswith(f"{path}: unknown key 'clip'") and "margin" in message and "clip," not in message


@pytest.mark.parametrize(
    ("objective", "text", "where", "expected"),
    [
        (
            "pyannote_segmentation",
            "lr: {low: 1.0e-4, hihg: 1.0e-2, log: true}\n",
            "key 'lr'",
            "unknown field 'hihg' (did you mean 'high'?)",
        ),
        (
            "wavlm_sv",
            "loss: {choices: [aam, tripplet]}\n",
            "key 'loss'",
            "unknown value 'tripplet' (did you mean 'triplet'?)",
        ),
        (
            "sepformer_separation",
            "schedule: cosin\n",
            "key 'schedule'",
            "unknown value 'cosin' (did you mean 'cosine'?)",
        ),
    ],
)
def test_misspelled_field_or_value(tmp_path: Path, objective: str, text: str, where: str, expected: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    message = _space_error(objective, path)
    assert message.startswith(f"{path}: {where}") and expected in message


@pytest.mark.parametrize("objective", sorted(SPACES))
def test_yaml_syntax_error_in_a_shipped_space_names_its_line(tmp_path: Path, objective: str) -> None:
    """Each shipped space with one key's colon deleted: the error names the copy's file and the line."""
    lines = SPACES[objective].read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("schedule:"))
    lines[number - 1] = "schedule"
    path = tmp_path / SPACES[objective].name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _space_error(objective, path)
    assert message.startswith(f"{path}:{number + 1}: invalid YAML")


@pytest.mark.parametrize("objective", sorted(SPACES))
def test_unknown_optimizer_fixed_by_the_study(objective: str) -> None:
    message = _space_error(objective, SPACES[objective], fixed={"optimizer": "SGD"})
    assert message.startswith("study 'x': fixed 'optimizer': unknown value 'SGD'")
    assert "Allowed: Adam, AdamW, RAdam, NAdam" in message


@pytest.mark.parametrize("objective", sorted(SPACES))
def test_unknown_optimizer_in_an_inline_space(objective: str) -> None:
    message = _space_error(objective, {"optimizer": {"choices": ["Adam", "adamw", "Lion"]}})
    assert message.startswith("study 'x' search_space: key 'optimizer', choice 'adamw': unknown value 'adamw'")
    assert "did you mean 'AdamW'" in message


@pytest.mark.parametrize(
    ("objective", "value", "expected"),
    [
        (
            "pyannote_segmentation",
            "loss/valid",
            "prune_on='loss/valid' is not a per-epoch value of objective 'pyannote_segmentation' "
            "(did you mean 'loss/val'?)",
        ),
        ("wavlm_sv", "loss/val", "prune_on='loss/val' is not a per-epoch value of objective 'wavlm_sv'"),
        (
            "sepformer_separation",
            "loss/val",
            "prune_on='loss/val' is a loss (lower is better), but the study maximizes SI-SNRi",
        ),
    ],
)
def test_prune_on_a_value_the_objective_does_not_report_or_in_the_wrong_direction(
    objective: str, value: str, expected: str
) -> None:
    from tuner.runner import pruning_value

    study = StudySpec(name="x", objective=objective, search_space=SPACES[objective], prune_on=value)
    with pytest.raises(ConfigError) as info:
        pruning_value(study, get_objective_class(objective)())
    assert str(info.value).startswith(f"study 'x': {expected}")


def test_prune_on_must_be_a_name() -> None:
    with pytest.raises(ConfigError, match="'prune_on' must name a per-epoch value such as 'loss/val', got 3"):
        StudySpec(name="x", objective="synthetic", search_space={}, prune_on=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ CLI


@pytest.mark.usefixtures("restore_logging")
def test_cli_run_of_a_study_file_with_a_misspelled_keyword(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    path = _study_file(
        tmp_path,
        "study = StudySpec(name='x', objective='wavlm_sv', search_space='s.yaml',\n                  n_trails=4)\n",
    )
    db = tmp_path / "x.db"
    with pytest.raises(SystemExit) as info:
        main(["run", str(path), "--storage", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(f"error: {path}:4: StudySpec has no keyword 'n_trails' (did you mean 'n_trials'?).")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists()
