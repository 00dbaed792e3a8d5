"""Seed 001's grid, then Optuna: the eight hand-run pyannote fine-tunings (Adam / AdamW / RAdam / NAdam,
constant or cosine annealing, batch 32 / 128 / 256, lr 1e-3) run first as warm-start trials, and TPE
continues from what they scored (metric: validation DER)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="pyannote_seed001",
    objective="pyannote_segmentation",  # pyannote.audio SpeakerDiarization task + PyanNet
    data="demo",  # or --data DIR (seed 001 layout) / database.yml[:Protocol]
    pretrained=None,  # or --pretrained path/to/pytorch_model.bin (segmentation-3.0, as the seed)
    search_space="search_spaces/pyannote_seed001.yaml",
    warm_start="search_spaces/seed001_grid.yaml",  # the seed's 8 settings: trials 0-7
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=8),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
    prune_on="loss/val",  # DER sits on a plateau for the first epochs, where ties never prune
    n_trials=16,  # 8 warm-start trials + 8 sampled ones (finished trials, across all workers)
    max_epochs=6,  # the seed ran 20 / 50 epochs on a GPU: --max-epochs 20
    seed=0,
)
