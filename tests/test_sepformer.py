"""The SepFormer separation objective end to end: SpeechBrain's SepFormer pieces, PIT SI-SNR, SI-SNRi."""

from __future__ import annotations

import math
import shutil

import optuna
import pytest
import torch
import yaml
from conftest import TINY_SEPFORMER, changed, fit_capturing

from tuner import export_best, run_study
from tuner.errors import ConfigError, DataError
from tuner.metrics.separation import pit_si_snr, separation_metrics
from tuner.runner import prepare_objective
from tuner.store.records import epochs_of


# ----------------------------------------------------------------------------------------- metrics
def _signals(seed: int = 0, batch: int = 2, time: int = 8000) -> torch.Tensor:
    return torch.randn(batch, time, 2, generator=torch.Generator().manual_seed(seed))


def test_perfect_estimate_scores_high_and_finite():
    sources = _signals()
    value = pit_si_snr(sources.clone(), sources)
    assert torch.all(torch.isfinite(value)) and torch.all(value > 60)


def test_si_snr_is_scale_invariant():
    sources = _signals()
    estimates = sources + 0.3 * _signals(seed=1)
    assert torch.allclose(pit_si_snr(estimates, sources), pit_si_snr(7.5 * estimates, sources), atol=1e-3)


def test_swapped_sources_are_handled_by_pit():
    sources = _signals()
    estimates = sources + 0.3 * _signals(seed=1)
    swapped = estimates[..., [1, 0]]
    assert torch.allclose(pit_si_snr(estimates, sources), pit_si_snr(swapped, sources), atol=1e-4)
    metrics, metrics_swapped = (
        separation_metrics(estimates, sources, sources.sum(-1)),
        separation_metrics(swapped, sources, sources.sum(-1)),
    )
    assert metrics == pytest.approx(metrics_swapped, abs=1e-3)


def test_mixture_as_estimate_improves_nothing():
    sources = _signals()
    mixture = sources.sum(-1)
    metrics = separation_metrics(mixture.unsqueeze(-1).expand_as(sources), sources, mixture)
    assert metrics["SI-SNRi"] == pytest.approx(0.0, abs=1e-4) and metrics["SDRi"] == pytest.approx(0.0, abs=1e-3)
    better = separation_metrics(sources + 0.1 * _signals(seed=2), sources, mixture)
    assert better["SI-SNRi"] > 10 and better["SDRi"] > 10


def test_sdr_survives_several_threads():
    """torch 2.11's MKL fails batched float64 solves on several threads; pit_sdr must not."""
    torch.set_num_threads(2)
    sources = _signals()
    assert torch.all(
        torch.isfinite(
            separation_metrics(sources + 0.2 * _signals(seed=5), sources, sources.sum(-1))["SDR"] * torch.ones(1)
        )
    )
    assert torch.get_num_threads() == 2


def test_si_snr_matches_its_definition():
    s = _signals(batch=1)[..., :1].repeat(1, 1, 2)
    s[..., 1] = _signals(seed=3, batch=1)[..., 0]
    noise = 0.5 * _signals(seed=4, batch=1)
    e = s + noise

    def si_snr(est, ref):
        est, ref = est - est.mean(), ref - ref.mean()
        target = (est @ ref) / (ref @ ref) * ref
        return 10 * math.log10(float(target @ target) / float((est - target) @ (est - target)))

    expected = (si_snr(e[0, :, 0], s[0, :, 0]) + si_snr(e[0, :, 1], s[0, :, 1])) / 2
    assert float(pit_si_snr(e, s)[0]) == pytest.approx(expected, abs=1e-2)


# --------------------------------------------------------------------------------------- objective
def test_tiny_trial_records_si_snri_and_sdri(sep_spec):
    objective, space = prepare_objective(sep_spec())
    result, _, _, trainer = fit_capturing(objective, space.config_from({"clip": 2.5, "lr": 1e-3}), max_epochs=2)
    assert sorted(result.history) == [0, 1]
    for record in result.history.values():
        for key in ("SI-SNRi", "SDRi", "SI-SNR", "SDR", "loss/train", "loss/val"):
            assert math.isfinite(record[key]), key
    assert trainer.gradient_clip_val == 2.5  # the trial's clip value reaches the Trainer


def test_frozen_blocks_do_not_change(sep_spec):
    objective, space = prepare_objective(sep_spec())
    _, module, before, _ = fit_capturing(objective, space.config_from({"unfrozen_layers": 1, "lr": 3e-3}))
    assert not any(changed(before, module, "model.masknet.dual_mdl.0.")), "the first dual-path block is frozen"
    assert not any(changed(before, module, "model.encoder.")), "the encoder is frozen"
    assert any(changed(before, module, "model.masknet.dual_mdl.1.")), "the last block is unfrozen"
    assert any(changed(before, module, "model.decoder.")), "the decoder always trains"


def test_pretrained_round_trip_through_a_speechbrain_folder(sep_spec, tmp_path):
    from tuner.models.sepformer import build_sepformer, save_speechbrain_sepformer

    torch.manual_seed(3)
    source = build_sepformer(TINY_SEPFORMER, num_spks=2)
    folder = save_speechbrain_sepformer(source, TINY_SEPFORMER, tmp_path / "sepformer-tiny")
    assert {p.name for p in folder.iterdir()} == {"hyperparams.yaml", "encoder.ckpt", "masknet.ckpt", "decoder.ckpt"}
    objective, space = prepare_objective(sep_spec(pretrained=str(folder)))
    model = objective.build(space.config_from({}), seed=99).module.model
    loaded = model.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, loaded[name]), name


@pytest.mark.bad_input
def test_pretrained_folder_errors(sep_spec, tmp_path):
    with pytest.raises(ConfigError, match=r"no hyperparams.yaml"):
        prepare_objective(sep_spec(pretrained=str(tmp_path)))


@pytest.mark.bad_input
def test_csv_row_naming_a_missing_file(sep_spec, sep_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(sep_corpus, corpus)
    csv = corpus / "metadata" / "mixture_dev_mix_both.csv"
    lines = csv.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    lines[1] = lines[1].replace("/s1/", "/s1_missing/")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        prepare_objective(sep_spec(data=str(corpus)))
    message = str(error.value)
    assert str(csv) in message and ":2" in message and first_id in message


def test_study_records_the_starting_model_and_exports(sep_spec, storage_url, tmp_path):
    run_study(sep_spec(max_epochs=1), storage_url, n_trials=1, workdir=tmp_path, show_progress=False)
    stored = optuna.load_study(study_name="sep_tiny", storage=storage_url)
    assert stored.direction == optuna.study.StudyDirection.MAXIMIZE
    baseline = stored.user_attrs["baseline"]
    assert {"SI-SNRi", "SDRi"} <= set(baseline) and all(math.isfinite(baseline[k]) for k in ("SI-SNRi", "SDRi"))
    (trial,) = stored.trials
    assert {"SI-SNRi", "SDRi", "loss/train"} <= set(epochs_of(trial)[0])
    out = tmp_path / "best.yaml"
    export_best("sep_tiny", out, storage_url)
    exported = yaml.safe_load(out.read_text())
    assert exported["params"] == trial.params and exported["metric"]["direction"] == "maximize"
    architecture = exported["trained_on"]["architecture"]  # read from the model that was built
    assert architecture["class"] == "SepFormer" and architecture["num_blocks"] == 2
    assert architecture["encoder_channels"] == 16 and architecture["kernel_size"] == 16 and architecture["stride"] == 8
    assert architecture["chunk_size"] == 50 and architecture["num_spks"] == 2
