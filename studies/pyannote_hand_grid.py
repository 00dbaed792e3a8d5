"""The eight hand-run settings, then Optuna: the pyannote fine-tunings people run by hand today (Adam / AdamW /
RAdam / NAdam, constant or cosine annealing, batch 32 / 128 / 256, lr 1e-3, the whole model trained) run first
as warm-start trials on pyannote/segmentation-3.0, and TPE continues from what they scored (metric: DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_hand_grid",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + the checkpoint's PyanNet
    data="demo",  # or --data DIR (pyannote folder layout) / database.yml[:Protocol]
    pretrained="segmentation-3.0",  # what the hand runs fine-tuned (fetched from the package registry)
    search_space="search_spaces/pyannote_hand_grid.yaml",
    warm_start="search_spaces/hand_grid.yaml",  # the eight hand-run settings: trials 0-7
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=2),  # the hand-run settings run in full
    n_trials=16,  # 8 warm-start trials + 8 sampled ones (finished trials, across all workers)
    max_epochs=3,  # a short default on CPU (an epoch at batch 256 is a minute on 2 cores); on a GPU, as the hand
    # runs did: --max-epochs 20
    seed=0,
)
