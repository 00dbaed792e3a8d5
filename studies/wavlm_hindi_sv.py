"""Which fine-tuning of WavLM (+ ECAPA-TDNN head) verifies Hindi speakers best?
An Optuna study over optimizer, schedule, batch size, unfrozen WavLM layers and the speaker loss
(metric: EER on the dev trial list of Kathbath-format data; the demo corpus by default)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="wavlm_hindi_sv",
    objective="wavlm_sv",  # s3prl WavLM + weighted layer sum + ECAPA-TDNN, cosine scoring
    data="demo",  # or --data KATHBATH_ROOT (<root>/train/<speaker>/<utt>.wav, trials/dev.txt)
    pretrained=None,  # or --pretrained wavlm_base_plus.pt (a small random WavLM if None)
    search_space="search_spaces/wavlm_sv.yaml",
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    n_trials=8,
    max_epochs=10,
    seed=0,
)
