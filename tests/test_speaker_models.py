"""Tests of the ECAPA-TDNN speaker-embedding head and the speaker losses (AAM-softmax, pair BCE, triplet)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuner.models import (
    ECAPATDNN,
    LOSSES,
    AAMSoftmax,
    BatchHardTriplet,
    PairBCE,
    build_speaker_loss,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These models are tiny: one thread is as fast and does not slow down on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = {"channels": 32, "emb_dim": 64, "scale": 8, "se_bottleneck": 16, "attention_channels": 16}


def _small_ecapa(in_dim: int = 24, **options: object) -> ECAPATDNN:
    torch.manual_seed(0)
    return ECAPATDNN(in_dim, **{**SMALL, **options})  # type: ignore[arg-type]


def _speaker_batch(n_speakers: int = 4, per_speaker: int = 4, emb_dim: int = 16) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    labels = torch.arange(n_speakers).repeat_interleave(per_speaker)
    return torch.randn(len(labels), emb_dim), labels


# ------------------------------------------------------------------------------ ECAPA-TDNN


def test_ecapa_output_shape_for_small_config() -> None:
    model = _small_ecapa()
    features = torch.randn(3, 40, 24)
    assert model(features).shape == (3, 64)
    assert model(features, torch.tensor([40, 25, 7])).shape == (3, 64)
    assert model.eval()(features[:1, :1]).shape == (1, 64)


@pytest.mark.parametrize("output_norm", [False, True])
def test_ecapa_embedding_ignores_padding_in_eval_mode(output_norm: bool) -> None:
    model = _small_ecapa(output_norm=output_norm)
    # give batch norms non-trivial running statistics, so that padded frames would leak if not masked
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.randn(4, 30, 24) * 2.0 + 1.0)
    model.eval()
    torch.manual_seed(2)
    short, long = torch.randn(1, 17, 24), torch.randn(1, 45, 24)
    padded = torch.cat([short, torch.randn(1, 45 - 17, 24) * 5.0], dim=1)  # non-zero garbage padding
    batch = torch.cat([padded, long])
    with torch.no_grad():
        alone = model(short)
        together = model(batch, torch.tensor([17, 45]))
        full_lengths = model(batch, torch.tensor([45, 45]))
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together[1], model(long)[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full_lengths[0], alone[0], atol=1e-3)  # the padding would change it


def test_ecapa_gradients_reach_every_parameter() -> None:
    model = _small_ecapa(output_norm=True).train()
    features = torch.randn(4, 30, 24, requires_grad=True)
    embeddings = model(features, torch.tensor([30, 20, 12, 30]))
    (embeddings * torch.randn_like(embeddings)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert features.grad is not None and features.grad[2, 12:].abs().max() == 0  # padding gets no gradient


def test_ecapa_rejects_bad_shapes() -> None:
    model = _small_ecapa()
    with pytest.raises(ValueError, match=r"in_dim|24"):
        model(torch.randn(2, 10, 23))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 10, 24), torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="multiple of scale"):
        ECAPATDNN(24, channels=30, scale=8)


# ------------------------------------------------------------------------------ losses


def _losses(emb_dim: int, n_speakers: int) -> dict[str, nn.Module]:
    torch.manual_seed(3)
    return {name: build_speaker_loss(name, emb_dim, n_speakers, margin=0.2, scale=30.0) for name in LOSSES}


def test_build_speaker_loss_types_and_unknown_name() -> None:
    losses = _losses(16, 4)
    assert isinstance(losses["aam"], AAMSoftmax)
    assert (losses["aam"].margin, losses["aam"].scale) == (0.2, 30.0)
    assert isinstance(losses["pair_bce"], PairBCE)
    assert isinstance(losses["triplet"], BatchHardTriplet) and losses["triplet"].margin == 0.2
    with pytest.raises(ValueError, match="aam, pair_bce, triplet"):
        build_speaker_loss("softmax", 16, 4, 0.2, 30.0)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_a_finite_scalar_with_gradients_to_embeddings_and_own_parameters(name: str) -> None:
    loss_module = _losses(16, 4)[name]
    embeddings, labels = _speaker_batch()
    embeddings.requires_grad_(True)
    loss = loss_module(embeddings, labels)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    for parameter_name, parameter in loss_module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
    expected = {"aam": {"weight"}, "pair_bce": {"w", "b"}, "triplet": set()}[name]
    assert {parameter_name for parameter_name, _ in loss_module.named_parameters()} == expected


@pytest.mark.parametrize("name", LOSSES)
def test_a_few_optimisation_steps_decrease_the_loss(name: str) -> None:
    loss_module = _losses(8, 4)[name]
    torch.manual_seed(4)
    labels = torch.arange(4).repeat_interleave(4)
    inputs = torch.randn(16, 12)
    model = nn.Linear(12, 8)  # a tiny embedding model on fixed random inputs
    parameters = [*model.parameters(), *loss_module.parameters()]
    values = []
    for _ in range(30):  # plain gradient descent (torch.optim's first step costs a second of imports)
        for parameter in parameters:
            parameter.grad = None
        loss = loss_module(model(inputs), labels)
        loss.backward()
        with torch.no_grad():
            for parameter in parameters:
                parameter -= 0.5 * parameter.grad
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0], values


def test_aam_with_zero_margin_is_cross_entropy_on_scaled_cosine() -> None:
    torch.manual_seed(5)
    loss_module = AAMSoftmax(16, 5, margin=0.0, scale=12.0)
    embeddings = torch.randn(10, 16)
    labels = torch.randint(0, 5, (10,))
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(loss_module.weight, dim=1).T
    expected = F.cross_entropy(12.0 * cosine, labels)
    torch.testing.assert_close(loss_module(embeddings, labels), expected, atol=1e-5, rtol=1e-5)


def test_aam_margin_makes_the_loss_larger_and_stays_monotone_past_pi() -> None:
    torch.manual_seed(6)
    embeddings, labels = torch.randn(8, 16), torch.randint(0, 3, (8,))
    plain = AAMSoftmax(16, 3, margin=0.0, scale=10.0)
    margin = AAMSoftmax(16, 3, margin=0.3, scale=10.0)
    margin.weight.data.copy_(plain.weight.data)
    assert margin(embeddings, labels) > plain(embeddings, labels)
    # an embedding opposite its class centre (theta near pi) uses the fallback and stays finite
    opposite = -margin.weight.data[labels[:1]]
    loss = margin(opposite.requires_grad_(True), labels[:1])
    loss.backward()
    assert torch.isfinite(loss)


def test_pair_bce_is_class_balanced_and_needs_a_positive_pair() -> None:
    loss_module = PairBCE()
    assert loss_module.w.item() == 10.0 and loss_module.b.item() == -5.0
    # 3 items: one positive pair (0, 1) and two negatives (0, 2), (1, 2)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([7, 7, 3])
    cosine = torch.tensor([0.0, 2**-0.5, 2**-0.5])
    targets = torch.tensor([1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(10.0 * cosine - 5.0, targets, reduction="none")
    expected = 0.5 * bce[0] + 0.5 * bce[1:].mean()
    torch.testing.assert_close(loss_module(embeddings, labels), expected)
    with pytest.raises(ValueError, match="two utterances of one speaker"):
        loss_module(embeddings, torch.tensor([0, 1, 2]))


def test_triplet_is_zero_when_speakers_are_separated_beyond_the_margin() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    embeddings = torch.eye(3).repeat_interleave(2, dim=0) * torch.tensor([1.0, 2.0] * 3)[:, None]
    # same speaker: cosine distance 0; other speaker: orthogonal, distance 1 > 0 + margin
    assert float(BatchHardTriplet(margin=0.2)(embeddings, labels)) == 0.0
    assert float(BatchHardTriplet(margin=1.5)(embeddings, labels)) == pytest.approx(0.5)


def test_triplet_skips_anchors_without_a_positive_and_errors_when_none_has_one() -> None:
    loss_module = BatchHardTriplet(margin=0.2)
    # anchors 0 and 1 (speaker 0) have a positive; anchor 2 (speaker 1) has none and is skipped
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # anchor 0: d(ap) = 1 - 0.6 = 0.4, d(an) = 1 - 0 = 1 -> 0; anchor 1: d(ap) = 0.4, d(an) = 0.2 -> 0.4
    assert float(loss_module(embeddings, labels)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="positive"):
        loss_module(embeddings, torch.tensor([0, 1, 2]))
