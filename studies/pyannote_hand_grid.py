"""The eight hand-run settings, then Optuna: the pyannote fine-tunings people run by hand today (Adam / AdamW /
RAdam / NAdam, constant or cosine annealing, batch 32 / 128 / 256, lr 1e-3) run first as warm-start trials,
and TPE continues from what they scored (metric: validation DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_hand_grid",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + PyanNet
    data="demo",  # or --data DIR (pyannote folder layout) / database.yml[:Protocol]
    pretrained=None,  # or --pretrained path/to/pytorch_model.bin (segmentation-3.0, as the hand runs did)
    search_space="search_spaces/pyannote_hand_grid.yaml",
    warm_start="search_spaces/hand_grid.yaml",  # the eight hand-run settings: trials 0-7
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
    prune_on="loss/val",  # DER sits on a plateau for the first epochs, where ties never prune
    n_trials=16,  # 8 warm-start trials + 8 sampled ones (finished trials, across all workers)
    max_epochs=6,  # the hand runs trained 20 / 50 epochs on a GPU: --max-epochs 20
    seed=0,
)
