"""Tests of the search-space vocabulary: loading, validation errors, suggestion, pinning, round trips."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from tuner.errors import ConfigError, TunerError
from tuner.search_space import (
    COMMON_PARAMS,
    OPTIMIZERS,
    Param,
    SearchSpace,
    TrialConfig,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "search_spaces" / "pyannote_scratch.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(tmp_path: Path, text: str, **kwargs) -> str:
    """Load ``text`` as a search-space file that must be rejected; return the message (names the file)."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_yaml(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    assert isinstance(info.value, TunerError)
    return message


def _trial_configs(space: SearchSpace, n: int, seed: int = 0) -> list[TrialConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return configs


# ------------------------------------------------------------------------------ the shipped file


def test_shipped_space_loads_with_the_declared_dimensions_and_fixed_values() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    assert space.source == str(SHIPPED)
    assert set(space.dimensions) == {"optimizer", "lr", "schedule", "batch_size", "unfrozen_layers", "weight_decay"}
    assert space.fixed == {"warmup_epochs": 0}
    assert isinstance(space.fixed["warmup_epochs"], int)

    dims = space.dimensions
    assert dims["optimizer"].choices == ("Adam", "AdamW", "RAdam", "NAdam")
    assert dims["schedule"].choices == ("constant", "cosine")
    assert dims["batch_size"].choices == (16, 32, 64)
    assert (dims["lr"].low, dims["lr"].high, dims["lr"].log, dims["lr"].is_int) == (1e-4, 1e-2, True, False)
    assert (dims["weight_decay"].low, dims["weight_decay"].high, dims["weight_decay"].log) == (1e-6, 1e-2, True)
    unfrozen = dims["unfrozen_layers"]
    assert (unfrozen.low, unfrozen.high, unfrozen.log, unfrozen.is_int) == (0, 3, False, True)


def test_suggest_on_a_real_trial_stays_in_the_declared_space() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    configs = _trial_configs(space, 25)
    for config in configs:
        assert isinstance(config, TrialConfig)
        assert config.optimizer in OPTIMIZERS
        assert config.schedule in ("constant", "cosine")
        assert config.batch_size in (16, 32, 64)
        assert 1e-4 <= config.lr <= 1e-2
        assert 1e-6 <= config.weight_decay <= 1e-2
        assert isinstance(config.unfrozen_layers, int) and 0 <= config.unfrozen_layers <= 3
        assert config.warmup_epochs == 0  # fixed value applied
        assert dict(config.extra) == {}
        assert config.as_dict()["lr"] == config.lr
    # the sampler really searches: over 25 random trials several values of each dimension show up
    assert len({c.optimizer for c in configs}) > 1
    assert len({c.unfrozen_layers for c in configs}) > 1
    assert len({round(math.log10(c.lr), 3) for c in configs}) > 1


def test_suggest_asks_the_trial_for_searched_parameters_only() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    study = optuna.create_study()
    trial = study.ask()
    config = space.suggest(trial)
    assert set(trial.params) == set(space.dimensions)
    assert "warmup_epochs" not in trial.params
    assert config.optimizer == trial.params["optimizer"]
    assert config.lr == trial.params["lr"]


def test_to_dict_round_trips_through_from_dict() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    data = space.to_dict()
    assert data["optimizer"] == {"choices": ["Adam", "AdamW", "RAdam", "NAdam"]}
    assert data["lr"] == {"low": 1e-4, "high": 1e-2, "log": True}
    assert data["unfrozen_layers"] == {"low": 0, "high": 3}
    assert data["warmup_epochs"] == 0
    again = SearchSpace.from_dict(data)
    assert again.dimensions == space.dimensions
    assert again.fixed == space.fixed
    assert again.to_dict() == data


def test_round_trip_keeps_step_and_pinned_values() -> None:
    space = SearchSpace.from_dict(
        {"lr": {"low": 0.001, "high": 0.01, "step": 0.001}, "batch_size": {"low": 8, "high": 64, "step": 8}}
    )
    space = space.with_fixed({"optimizer": "RAdam"})
    again = SearchSpace.from_dict(space.to_dict())
    assert again.dimensions == space.dimensions
    assert again.dimensions["batch_size"].step == 8
    assert again.fixed == {"optimizer": "RAdam"}


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    space = SearchSpace.from_yaml(_write(tmp_path, "# nothing searched\n"))
    assert space.dimensions == {} and space.fixed == {}
    config = space.suggest(optuna.create_study().ask())
    assert config == TrialConfig()


def test_config_from_fills_defaults_and_fixed_values() -> None:
    space = SearchSpace.from_dict({"warmup_epochs": 2, "lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    config = space.config_from({"lr": 0.005})
    assert config.lr == 0.005
    assert config.warmup_epochs == 2
    assert config.optimizer == COMMON_PARAMS["optimizer"].default


# ------------------------------------------------------------------------------ errors


@pytest.mark.bad_input
def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "optimiser: Adam\n")
    assert "'optimiser'" in message
    assert "did you mean 'optimizer'" in message


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["optimizer: {choices: [Adam, SGD]}\n", "optimizer: SGD\n"])
def test_unknown_optimizer_is_rejected_and_the_allowed_ones_listed(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text)
    assert "key 'optimizer'" in message
    assert "'SGD'" in message
    assert "Adam, AdamW, RAdam, NAdam" in message


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["optimizer: {choices: [adamw]}\n", "optimizer: ADAMW\n"])
def test_wrong_case_optimizer_suggests_the_right_spelling(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text)
    assert "key 'optimizer'" in message
    assert "did you mean 'AdamW'" in message


@pytest.mark.bad_input
def test_wrong_case_optimizer_is_rejected(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "optimizer: {choices: [adamw]}\n")
    assert "key 'optimizer'" in message and "'adamw'" in message


@pytest.mark.bad_input
def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "batch_size: big\n")
    assert "key 'batch_size'" in message
    assert "expected int" in message and "'big'" in message


@pytest.mark.bad_input
def test_float_is_not_an_int(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "batch_size: {choices: [16, 32.5]}\n")
    assert "key 'batch_size'" in message and "expected int" in message


@pytest.mark.bad_input
def test_bool_is_not_a_number(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: true\n")
    assert "key 'lr'" in message and "expected float" in message


@pytest.mark.bad_input
def test_plain_list_is_ambiguous(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: [1, 2]\n")
    assert "key 'lr'" in message
    assert "choices" in message


@pytest.mark.bad_input
def test_low_above_high(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: {low: 0.1, high: 0.01}\n")
    assert "key 'lr'" in message
    assert "greater than 'high'" in message


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("weight_decay: {low: 0, high: 0.01, log: true}\n", "weight_decay"),
        ("unfrozen_layers: {low: 0, high: 3, log: true}\n", "unfrozen_layers"),
    ],
)
def test_log_range_needs_a_positive_low(tmp_path: Path, text: str, key: str) -> None:
    message = _load_error(tmp_path, text)
    assert f"key '{key}'" in message
    assert "log-scale range needs 'low' > 0" in message


@pytest.mark.bad_input
def test_non_positive_bound_of_a_positive_parameter(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: {low: 0, high: 0.01, log: true}\n")
    assert "key 'lr'" in message and "must be > 0" in message


@pytest.mark.bad_input
def test_unknown_field_in_a_range(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: {low: 0.001, hgh: 0.01}\n")
    assert "key 'lr'" in message
    assert "'hgh'" in message and "did you mean 'high'" in message


@pytest.mark.bad_input
def test_range_missing_a_bound(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: {low: 0.001}\n")
    assert "key 'lr'" in message and "'low' and 'high'" in message


@pytest.mark.bad_input
def test_range_on_a_string_parameter(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "optimizer: {low: 1, high: 2}\n")
    assert "key 'optimizer'" in message and "choices" in message


@pytest.mark.bad_input
def test_step_with_log(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: {low: 0.001, high: 0.01, log: true, step: 0.001}\n")
    assert "key 'lr'" in message and "'step'" in message


@pytest.mark.bad_input
def test_choices_combined_with_a_range(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "batch_size: {choices: [16], low: 8}\n")
    assert "key 'batch_size'" in message and "cannot be combined" in message


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["batch_size: {choices: []}\n", "batch_size: {choices: 16}\n"])
def test_empty_or_non_list_choices(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text)
    assert "key 'batch_size'" in message
    assert "non-empty list" in message


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["batch_size: {choices: [16, 32, 16]}\n", "lr: {choices: [1.0e-3, 0.001]}\n"])
def test_duplicated_choices(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text)
    assert "twice" in message
    assert "key '" in message


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["- lr\n- batch_size\n", "just a string\n", "42\n"])
def test_document_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text)
    assert "must be a mapping" in message


@pytest.mark.bad_input
def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "optimizer: Adam\nlr: 0.1\n  batch_size: 3\n")
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: invalid YAML")


@pytest.mark.bad_input
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "space.yaml"
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_yaml(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


@pytest.mark.bad_input
def test_a_directory_is_not_a_search_space_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        SearchSpace.from_yaml(tmp_path)


# ------------------------------------------------------------------------------ with_fixed


def test_with_fixed_pins_a_searched_parameter() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    pinned = space.with_fixed({"batch_size": 8, "optimizer": "AdamW"}, source="study 'x'")
    assert "batch_size" not in pinned.dimensions and "optimizer" not in pinned.dimensions
    assert pinned.fixed["batch_size"] == 8 and pinned.fixed["optimizer"] == "AdamW"
    assert "batch_size" in space.dimensions  # the original is untouched
    study = optuna.create_study()
    trial = study.ask()
    config = pinned.suggest(trial)
    assert config.batch_size == 8 and config.optimizer == "AdamW"
    assert "batch_size" not in trial.params and "optimizer" not in trial.params
    assert "lr" in trial.params


@pytest.mark.bad_input
def test_with_fixed_coerces_and_validates_values() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    assert space.with_fixed({"lr": 1}).fixed["lr"] == 1.0
    with pytest.raises(ConfigError) as info:
        space.with_fixed({"batch_size": 0}, source="study 'x'")
    assert "study 'x'" in str(info.value) and "'batch_size'" in str(info.value)


@pytest.mark.bad_input
def test_with_fixed_rejects_an_unknown_name() -> None:
    space = SearchSpace.from_yaml(SHIPPED)
    with pytest.raises(ConfigError) as info:
        space.with_fixed({"batchsize": 8}, source="study 'mine'")
    message = str(info.value)
    assert "study 'mine'" in message
    assert "'batchsize'" in message and "did you mean 'batch_size'" in message


# ------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    "text", ["lr: 1e-4\n", "lr: {low: 1e-4, high: 1e-2, log: true}\n", "lr: {choices: [1e-4, 3e-4]}\n"]
)
def test_scientific_notation_without_a_dot_is_a_float(tmp_path: Path, text: str) -> None:
    space = SearchSpace.from_yaml(_write(tmp_path, text))
    if "lr" in space.fixed:
        assert space.fixed["lr"] == 1e-4 and isinstance(space.fixed["lr"], float)
    elif space.dimensions["lr"].choices is not None:
        assert space.dimensions["lr"].choices == (1e-4, 3e-4)
        assert all(isinstance(c, float) for c in space.dimensions["lr"].choices)
    else:
        dim = space.dimensions["lr"]
        assert (dim.low, dim.high) == (1e-4, 1e-2) and isinstance(dim.low, float)
    config = space.suggest(optuna.create_study().ask())
    assert isinstance(config.lr, float) and 1e-4 <= config.lr <= 1e-2


@pytest.mark.bad_input
def test_non_numeric_string_is_still_rejected(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "lr: 1e-4x\n")
    assert "key 'lr'" in message and "expected float" in message


@pytest.mark.bad_input
def test_non_finite_number_is_rejected(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "weight_decay: .inf\n")
    assert "key 'weight_decay'" in message and "finite" in message


def test_int_is_accepted_for_a_float() -> None:
    space = SearchSpace.from_dict({"lr": {"low": 1, "high": 2}})
    assert isinstance(space.dimensions["lr"].low, float)


# ------------------------------------------------------------------------------ objective parameters

MARGIN = {"margin": Param(float, 0.2, positive=True, help="loss margin")}


def test_extra_parameter_is_searched_and_suggested(tmp_path: Path) -> None:
    path = _write(tmp_path, "margin: {low: 0.1, high: 0.5}\nlr: 0.001\n")
    space = SearchSpace.from_yaml(path, extra=MARGIN)
    assert set(space.dimensions) == {"margin"}
    for config in _trial_configs(space, 10):
        assert 0.1 <= config.extra["margin"] <= 0.5
        assert config.lr == 0.001
        assert config.as_dict()["margin"] == config.extra["margin"]


def test_extra_parameter_default_and_fixed_value(tmp_path: Path) -> None:
    space = SearchSpace.from_yaml(_write(tmp_path, "optimizer: AdamW\n"), extra=MARGIN)
    assert space.suggest(optuna.create_study().ask()).extra == {"margin": 0.2}
    space = SearchSpace.from_yaml(_write(tmp_path, "margin: 3e-1\n", "fixed.yaml"), extra=MARGIN)
    assert space.fixed == {"margin": 0.3}
    assert space.config_from({}).extra["margin"] == 0.3


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["margin: -0.1\n", "margin: 0\n", "margin: {low: 0, high: 0.5}\n", "margin: wide\n"])
def test_extra_parameter_is_validated(tmp_path: Path, text: str) -> None:
    message = _load_error(tmp_path, text, extra=MARGIN)
    assert "key 'margin'" in message


@pytest.mark.bad_input
def test_extra_parameter_is_unknown_without_the_objective(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "margin: 0.3\n")
    assert "unknown key 'margin'" in message


def test_the_default_fine_tuning_space_is_the_recorded_grid_with_torchs_weight_decays() -> None:
    """search_spaces/pyannote.yaml (studies/pyannote_optim.py): 64 configurations, the table's grid; weight
    decay is torch's default for the optimizer drawn, as the hand runs had it."""
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "pyannote.yaml")
    searched = {name: d.choices for name, d in space.dimensions.items() if name != "weight_decay"}
    assert all(choices is not None for choices in searched.values())  # a grid: every dimension is a list
    assert math.prod(len(c) for c in searched.values()) == 64
    assert max(searched["lr"]) == 1e-3  # fine-tuning: pyannote's default rate is the top
    decays = {}
    for config in _trial_configs(space, 40):
        decays.setdefault(config.optimizer, set()).add(config.weight_decay)
    assert decays == {"Adam": {0.0}, "RAdam": {0.0}, "NAdam": {0.0}, "AdamW": {0.01}}
