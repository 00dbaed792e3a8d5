"""Every use of pyannote.audio's private API (tuner.objectives.pyannote_internals), checked against pyannote's own
results: if an upgrade changes what they return, these fail before tuner evaluate's figures go wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner.objectives.pyannote_internals import chunk_der_components

pytestmark = pytest.mark.slow


class _Multilabel(torch.nn.Module):
    """A stand-in 'model' whose output is the batch's own noisy predictions (multi-label: no powerset)."""

    class specifications:  # read as an attribute, as pyannote's models have it
        powerset = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_chunk_components_add_up_to_pyannote_s_diarization_error_rate():
    from pyannote.audio.torchmetrics import DiarizationErrorRate

    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(6, 50, 3, generator=generator) > 0.6).float()  # (chunks, frames, speakers)
    predictions = (target + 0.7 * torch.rand(6, 50, 3, generator=generator)).clamp(0, 1)
    components = chunk_der_components(_Multilabel(), {"X": predictions, "y": target})
    assert components.shape == (6, 4)

    metric = DiarizationErrorRate(0.5)
    metric(torch.transpose(predictions, 1, 2), torch.transpose(target, 1, 2))
    totals = components.sum(dim=0)
    assert float(totals[:3].sum() / totals[3]) == pytest.approx(float(metric.compute()), rel=1e-6)
    # and chunk by chunk
    for chunk in range(6):
        one = DiarizationErrorRate(0.5)
        one(torch.transpose(predictions[chunk : chunk + 1], 1, 2), torch.transpose(target[chunk : chunk + 1], 1, 2))
        row = components[chunk]
        assert float(row[:3].sum() / row[3]) == pytest.approx(float(one.compute()), rel=1e-6)


def test_files_der_weighted_by_speech_is_the_validation_s_der(make_spec, tmp_path):
    """The per-file DER the collector gathers, weighted by each file's reference speech, is the DER the
    validation logs (pyannote's validation chunks, mapped to their files in the dataloader's order)."""
    from conftest import TINY_SIZES

    from tuner.data.demo import ensure_diarization_corpus
    from tuner.runner import prepare_objective
    from tuner.search_space import TrialConfig
    from tuner.training.fit import validate

    corpus = ensure_diarization_corpus(tmp_path / "corpus", seed=0, **{**TINY_SIZES, "n_dev": 3})
    objective, _ = prepare_objective(make_spec(data=corpus), workdir=tmp_path)
    collector = objective.item_collector()
    metrics = validate(objective, TrialConfig(batch_size=2), 0, {}, items=collector)
    scores = collector.scores
    assert scores is not None and len(scores.ids) == 3 and all(i.startswith("demo_dev") for i in scores.ids)
    assert float(np.average(scores.values, weights=scores.weights)) == pytest.approx(metrics["DER"], rel=1e-5)


def test_speakers_are_matched_in_float32_under_bf16() -> None:
    """SciPy refuses a bfloat16 cost matrix: after the patch, half-precision scores are matched as float32 ones."""
    from pyannote.audio.utils.permutation import permutate

    from tuner.objectives.pyannote_internals import match_speakers_in_float32

    torch.manual_seed(0)
    y1, y2 = torch.rand(2, 50, 3), torch.rand(2, 50, 3)
    expected, _ = permutate(y1, y2)
    match_speakers_in_float32()
    match_speakers_in_float32()  # once per process: a second call wraps nothing again
    permutated, _ = permutate(y1.bfloat16(), y2.bfloat16())
    assert permutated.dtype == torch.float32
    torch.testing.assert_close(permutated, expected, atol=1e-2, rtol=0)
    again, _ = permutate(y1, y2)  # full precision: unchanged
    assert torch.equal(again, expected)
