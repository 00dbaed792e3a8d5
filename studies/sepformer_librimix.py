"""How should SepFormer be fine-tuned on noisy two-speaker mixtures
(Libri2Mix "both") -- which optimizer, schedule, batch size, clip value, and how many of the masknet's
last dual-path blocks to unfreeze? An Optuna study maximising dev SI-SNRi (SDRi recorded beside it)."""

import optuna

from tuner import StudySpec

study = StudySpec(
    name="sepformer_librimix",
    objective="sepformer_separation",  # SpeechBrain Encoder + Dual_Path_Model(SBTransformerBlock) + Decoder
    data="demo",  # or --data Libri2Mix/wav8k/min (metadata/mixture_{train,dev}_mix_both.csv)
    pretrained=None,  # or --pretrained path/to/sepformer-libri2mix (a local SpeechBrain model folder)
    search_space="search_spaces/sepformer.yaml",
    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    n_trials=8,
    max_epochs=12,
    seed=0,
)
