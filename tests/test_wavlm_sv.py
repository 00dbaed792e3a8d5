"""The WavLM speaker-verification objective end to end: s3prl's WavLM, ECAPA-TDNN head, EER on trials."""

from __future__ import annotations

import argparse
import math
import shutil

import optuna
import pytest
import torch
import yaml
from conftest import TINY_SV_OPTIONS, TINY_WAVLM, changed, fit_capturing

from tuner import export_best, run_study
from tuner.errors import ConfigError, DataError
from tuner.runner import prepare_objective
from tuner.store.records import epochs_of


@pytest.mark.parametrize("loss", ["aam", "pair_bce", "triplet"])
def test_tiny_trial_records_eer_and_min_dcf(sv_spec, loss):
    objective, space = prepare_objective(sv_spec())
    result, *_ = fit_capturing(objective, space.config_from({"loss": loss, "lr": 3e-3}), max_epochs=2)
    assert sorted(result.history) == [0, 1]
    for record in result.history.values():
        assert 0.0 <= record["EER"] <= 100.0
        assert 0.0 <= record["minDCF"] <= 1.0 + 1e-9
        assert math.isfinite(record["threshold"]) and math.isfinite(record["loss/train"])


def test_zero_unfrozen_layers_keeps_wavlm_frozen(sv_spec):
    objective, space = prepare_objective(sv_spec())
    _, module, before, _ = fit_capturing(objective, space.config_from({"unfrozen_layers": 0, "lr": 1e-2}))
    assert not any(changed(before, module, "upstream.")), "WavLM is frozen but changed"
    assert all(changed(before, module, "featurizer.")), "the layer weights always train"
    assert any(changed(before, module, "head.")), "the ECAPA head always trains"


def test_top_k_layers_train_and_the_rest_stay(sv_spec):
    objective, space = prepare_objective(sv_spec())
    _, module, before, _ = fit_capturing(objective, space.config_from({"unfrozen_layers": 1, "lr": 1e-2}))
    assert any(changed(before, module, "upstream.model.encoder.layers.2.")), "the top layer must train"
    for frozen in ("layers.0.", "layers.1."):
        assert not any(changed(before, module, f"upstream.model.encoder.{frozen}")), frozen
    assert not any(changed(before, module, "upstream.model.feature_extractor.")), "the CNN is frozen"
    trainable = {n for n, p in module.named_parameters() if p.requires_grad and n.startswith("upstream.")}
    assert trainable and all(n.startswith("upstream.model.encoder.layers.2.") for n in trainable)


def test_pretrained_round_trip_in_s3prl_format(sv_spec, tmp_path):
    from tuner.models.wavlm import WavLMUpstream, save_wavlm_checkpoint

    torch.manual_seed(7)
    source = WavLMUpstream({**TINY_WAVLM, "encoder_layers": 2})
    path = tmp_path / "wavlm_tiny.pt"
    save_wavlm_checkpoint(source, path)
    assert set(torch.load(path, weights_only=True)) == {"cfg", "model"}
    # the shipped space searches up to 3 unfrozen layers: more than this 2-layer model has
    with pytest.raises(ConfigError, match="'unfrozen_layers' goes up to 3 but the wavlm_sv model has 2"):
        prepare_objective(sv_spec(pretrained=str(path)))
    objective, space = prepare_objective(sv_spec(pretrained=str(path), fixed={"batch_size": 8, "unfrozen_layers": 2}))
    module = objective.build(space.config_from({}), seed=123).module
    loaded = module.upstream.model.state_dict()
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(tensor, loaded[name]), name
    assert module.upstream.num_layers == 2  # the architecture comes from the checkpoint's cfg


@pytest.mark.bad_input
def test_pretrained_pickle_needs_trust(sv_spec, tmp_path):
    from tuner.models.wavlm import WavLMUpstream

    path = tmp_path / "legacy.pt"
    upstream = WavLMUpstream(TINY_WAVLM)
    torch.save(
        {"cfg": argparse.Namespace(**TINY_WAVLM), "model": upstream.model.state_dict()}, path
    )  # a pickled object
    with pytest.raises(ConfigError, match="trust_checkpoint"):
        prepare_objective(sv_spec(pretrained=str(path)))
    objective, space = prepare_objective(
        sv_spec(pretrained=str(path), options={**TINY_SV_OPTIONS, "trust_checkpoint": True})
    )
    assert objective.build(space.config_from({}), seed=0).module.upstream.num_layers == 3


@pytest.mark.bad_input
def test_pretrained_errors_name_the_file(sv_spec, tmp_path):
    with pytest.raises(ConfigError, match=r"not found: .*missing.pt"):
        prepare_objective(sv_spec(pretrained=str(tmp_path / "missing.pt")))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ConfigError, match="expected a dict with 'cfg' and 'model'"):
        prepare_objective(sv_spec(pretrained=str(other)))


@pytest.mark.bad_input
def test_trial_list_naming_a_missing_file(sv_spec, sv_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(sv_corpus, corpus)
    trials = corpus / "trials" / "dev.txt"
    lines = trials.read_text().splitlines()
    lines.insert(2, "1 dev/nobody/u000.wav dev/nobody/u001.wav")
    trials.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        prepare_objective(sv_spec(data=str(corpus)))
    assert f"{trials}:3" in str(error.value) and "nobody" in str(error.value)


def test_study_records_and_exports_like_the_others(sv_spec, storage_url, tmp_path):
    study = run_study(sv_spec(max_epochs=1), storage_url, n_trials=1, workdir=tmp_path, show_progress=False)
    stored = optuna.load_study(study_name="sv_tiny", storage=storage_url)
    (trial,) = stored.trials
    record = epochs_of(trial)[0]
    assert {"EER", "minDCF", "threshold", "loss/train", "lr"} <= set(record)
    assert trial.value == pytest.approx(record["EER"])
    assert stored.user_attrs["metric"] == "EER" and 0 <= stored.user_attrs["baseline"]["EER"] <= 100
    out = tmp_path / "best.yaml"
    export_best("sv_tiny", out, storage_url)
    exported = yaml.safe_load(out.read_text())
    assert exported["params"] == trial.params and exported["objective"] == "wavlm_sv"
    architecture = exported["trained_on"]["architecture"]  # from scratch: the tiny WavLM the options built
    assert architecture["wavlm"]["encoder_layers"] == 3 and architecture["wavlm"]["encoder_embed_dim"] == 32
    assert architecture["head"] == {"channels": 32, "emb_dim": 64} and "wavlm" in exported["trained_on"]["options"]
    assert study.user_attrs["search_space"]["scale"]["when"] == {"loss": ["aam"]}
    det = trial.user_attrs["details/best"]["det"]  # the best epoch's DET curve, for the report
    assert len(det["fpr"]) == len(det["fnr"]) <= 50 and det["fpr"][0] == 1.0 and det["fnr"][-1] == 1.0
