"""Tests of the optimizer, learning-rate schedule and layer freezing shared by every objective."""

from __future__ import annotations

import itertools
import math
import pickle

import pytest
import torch
from torch import nn

from tuner.search_space import TrialConfig
from tuner.training.freeze import LayerStack, apply_unfrozen_layers
from tuner.training.optim import WarmupCosine, build_optimizer, build_scheduler

# ------------------------------------------------------------------------------ WarmupCosine


def test_cosine_without_warmup_starts_at_one_halves_midway_and_ends_at_zero() -> None:
    factor = WarmupCosine(max_epochs=10, warmup_epochs=0, cosine=True)
    assert factor(0) == pytest.approx(1.0)
    assert factor(5) == pytest.approx(0.5)
    assert factor(10) == pytest.approx(0.0, abs=1e-12)
    # the last epoch that trains (9) runs at a small but non-zero rate
    assert 0.0 < factor(9) < 0.05
    assert factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_cosine_is_monotone_non_increasing_after_warmup() -> None:
    for max_epochs, warmup in ((10, 0), (12, 3), (7, 6), (50, 5)):
        factor = WarmupCosine(max_epochs, warmup, cosine=True)
        values = [factor(e) for e in range(warmup, max_epochs + 1)]
        assert values[0] == pytest.approx(1.0)
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values)), (max_epochs, warmup, values)
        assert values[-1] == pytest.approx(0.0, abs=1e-12)
        assert all(0.0 <= v <= 1.0 for v in values)


def test_cosine_reaches_half_at_half_the_span_after_warmup() -> None:
    factor = WarmupCosine(max_epochs=11, warmup_epochs=3, cosine=True)  # span 8: half at epoch 3 + 4
    assert factor(3) == pytest.approx(1.0)
    assert factor(7) == pytest.approx(0.5)
    assert factor(11) == pytest.approx(0.0, abs=1e-12)


def test_linear_warmup_values() -> None:
    factor = WarmupCosine(max_epochs=10, warmup_epochs=3, cosine=True)
    assert [factor(e) for e in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert factor(3) == pytest.approx(1.0)  # warm-up ends at the peak, where the cosine starts
    warmup = [factor(e) for e in range(4)]
    steps = [b - a for a, b in itertools.pairwise(warmup)]
    assert steps == pytest.approx([0.25, 0.25, 0.25])  # linear


def test_constant_schedule_is_one_after_warmup() -> None:
    assert all(WarmupCosine(8, 0, cosine=False)(e) == 1.0 for e in range(10))
    factor = WarmupCosine(8, 2, cosine=False)
    assert [factor(e) for e in range(6)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0])


def test_warmup_is_clamped_below_max_epochs() -> None:
    factor = WarmupCosine(max_epochs=4, warmup_epochs=10, cosine=True)
    assert factor.warmup_epochs == 3
    assert factor(3) == pytest.approx(1.0)  # the last epoch still trains at the peak rate
    assert WarmupCosine(max_epochs=0).max_epochs == 1
    assert WarmupCosine(max_epochs=5, warmup_epochs=-2).warmup_epochs == 0


def test_warmup_cosine_is_picklable() -> None:
    factor = pickle.loads(pickle.dumps(WarmupCosine(10, 2, cosine=True)))
    assert factor(1) == pytest.approx(2 / 3)
    assert factor(2) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ build_scheduler


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def test_constant_schedule_without_warmup_has_no_scheduler() -> None:
    assert build_scheduler(_optimizer(), TrialConfig(schedule="constant", warmup_epochs=0), max_epochs=5) is None


@pytest.mark.parametrize(("schedule", "warmup"), [("cosine", 0), ("cosine", 2), ("constant", 2)])
def test_scheduler_is_a_lambda_lr_otherwise(schedule: str, warmup: int) -> None:
    scheduler = build_scheduler(_optimizer(), TrialConfig(schedule=schedule, warmup_epochs=warmup), max_epochs=6)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    (factor,) = scheduler.lr_lambdas
    assert isinstance(factor, WarmupCosine)
    assert factor.cosine is (schedule == "cosine")
    assert factor.warmup_epochs == warmup and factor.max_epochs == 6


def _lrs_over_training(config: TrialConfig, max_epochs: int) -> list[float]:
    """The learning rate of each epoch, stepping the scheduler once per epoch as Lightning does."""
    optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], config)
    scheduler = build_scheduler(optimizer, config, max_epochs)
    assert scheduler is not None
    lrs = []
    for _ in range(max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])  # after the last epoch
    return lrs


def test_stepping_cosine_scheduler_anneals_the_optimizer_lr() -> None:
    lrs = _lrs_over_training(TrialConfig(schedule="cosine", lr=0.1), max_epochs=10)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(11)]
    assert lrs == pytest.approx(expected, abs=1e-9)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05) and lrs[10] == pytest.approx(0.0, abs=1e-9)


def test_stepping_warmup_then_cosine() -> None:
    lrs = _lrs_over_training(TrialConfig(schedule="cosine", warmup_epochs=2, lr=0.2), max_epochs=6)
    assert lrs[:3] == pytest.approx([0.2 / 3, 0.4 / 3, 0.2])
    assert lrs[3:] == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 5)], abs=1e-9)


def test_stepping_warmup_then_constant() -> None:
    lrs = _lrs_over_training(TrialConfig(schedule="constant", warmup_epochs=3, lr=0.01), max_epochs=6)
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01])


# ------------------------------------------------------------------------------ build_optimizer


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("Adam", torch.optim.Adam),
        ("AdamW", torch.optim.AdamW),
        ("RAdam", torch.optim.RAdam),
        ("NAdam", torch.optim.NAdam),
    ],
)
def test_build_optimizer_class_lr_and_weight_decay(name: str, cls: type) -> None:
    model = _model()
    optimizer = build_optimizer(model.parameters(), TrialConfig(optimizer=name, lr=3e-3, weight_decay=1e-4))
    assert type(optimizer) is cls
    (group,) = optimizer.param_groups
    assert group["lr"] == 3e-3
    assert group["weight_decay"] == 1e-4
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}


def test_build_optimizer_skips_frozen_parameters() -> None:
    model = _model()
    model[0].requires_grad_(False)
    optimizer = build_optimizer(model.parameters(), TrialConfig())
    params = optimizer.param_groups[0]["params"]
    assert {id(p) for p in params} == {id(model[2].weight), id(model[2].bias)}
    assert all(p.requires_grad for p in params)


def test_build_optimizer_accepts_a_generator_once() -> None:
    model = _model()
    optimizer = build_optimizer((p for p in model.parameters()), TrialConfig(optimizer="AdamW"))
    assert len(optimizer.param_groups[0]["params"]) == 4


def test_build_optimizer_raises_when_nothing_trains() -> None:
    model = _model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model.parameters(), TrialConfig())
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([], TrialConfig())


def test_built_optimizer_updates_only_trainable_weights() -> None:
    model = _model()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    trained = model[2].weight.detach().clone()
    optimizer = build_optimizer(model.parameters(), TrialConfig(optimizer="Adam", lr=0.1))
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, trained)


# ------------------------------------------------------------------------------ apply_unfrozen_layers


class _Net(nn.Module):
    """A PyanNet-like stack: three blocks, a classifier head, and a parameter in neither."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
        self.classifier = nn.Linear(2, 1)
        self.scale = nn.Parameter(torch.ones(1))  # belongs to no block: frozen whenever k is given

    def stack(self) -> LayerStack:
        return LayerStack(head=[self.classifier], blocks=list(self.blocks), block_names=["a", "b", "c"])


def _trains(module: nn.Module) -> bool:
    flags = {p.requires_grad for p in module.parameters()}
    assert len(flags) == 1, "a module is partly frozen"
    return flags.pop()


def _state(net: _Net) -> tuple[list[bool], bool, bool]:
    return [_trains(b) for b in net.blocks], _trains(net.classifier), net.scale.requires_grad


def test_unfrozen_none_trains_everything_even_after_freezing() -> None:
    net = _Net()
    apply_unfrozen_layers(net, net.stack(), 0)
    apply_unfrozen_layers(net, net.stack(), None)
    assert _state(net) == ([True, True, True], True, True)


def test_unfrozen_zero_trains_only_the_head() -> None:
    net = _Net()
    apply_unfrozen_layers(net, net.stack(), 0)
    assert _state(net) == ([False, False, False], True, False)


def test_unfrozen_one_trains_head_and_last_block() -> None:
    net = _Net()
    apply_unfrozen_layers(net, net.stack(), 1)
    assert _state(net) == ([False, False, True], True, False)


def test_unfrozen_all_blocks_still_freezes_parameters_outside_the_stack() -> None:
    net = _Net()
    apply_unfrozen_layers(net, net.stack(), 3)
    assert _state(net) == ([True, True, True], True, False)


def test_unfreezing_fewer_layers_refreezes() -> None:
    net = _Net()
    apply_unfrozen_layers(net, net.stack(), 2)
    assert _state(net) == ([False, True, True], True, False)
    apply_unfrozen_layers(net, net.stack(), 1)
    assert _state(net) == ([False, False, True], True, False)


def test_unfrozen_on_a_sequential_with_plain_stack() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1))
    apply_unfrozen_layers(model, LayerStack(head=[model[2]], blocks=[model[0], model[1]]), 1)
    assert [_trains(m) for m in model] == [False, True, True]
    optimizer = build_optimizer(model.parameters(), TrialConfig())
    assert len(optimizer.param_groups[0]["params"]) == 4


@pytest.mark.parametrize("k", [4, 10])
def test_too_many_unfrozen_layers_names_the_number_of_blocks(k: int) -> None:
    net = _Net()
    with pytest.raises(ValueError) as info:
        apply_unfrozen_layers(net, net.stack(), k)
    message = str(info.value)
    assert f"unfrozen_layers={k}" in message
    assert "3 freezable blocks" in message
    assert "a, b, c" in message and "0..3" in message
    assert _state(net) == ([True, True, True], True, True)  # nothing was changed


def test_too_many_unfrozen_layers_without_block_names() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with pytest.raises(ValueError, match="1 freezable blocks"):
        apply_unfrozen_layers(model, LayerStack(head=[model[1]], blocks=[model[0]]), 2)


def test_negative_unfrozen_layers_is_rejected() -> None:
    net = _Net()
    with pytest.raises(ValueError, match="unfrozen_layers=-1"):
        apply_unfrozen_layers(net, net.stack(), -1)


def test_layer_stack_describe() -> None:
    net = _Net()
    stack = net.stack()
    assert stack.describe(None) == "all layers train"
    assert stack.describe(0) == "head + no blocks"
    assert stack.describe(2) == "head + ['b', 'c']"
    unnamed = LayerStack(head=[net.classifier], blocks=list(net.blocks))
    assert unnamed.describe(1) == "head + ['Linear']"
