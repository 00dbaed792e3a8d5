"""Options several ``tuner`` commands share (click decorators), kept apart so that cli.py holds the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tuner.store.connect import DEFAULT_STORAGE
from tuner.study import PRECISIONS

__all__ = ["storage_option", "workdir_option", "artifacts_option", "precision_options"]

_STORAGE_HELP = (
    f"SQLAlchemy URL of the trial store (default: $TUNER_STORAGE, else {DEFAULT_STORAGE}); "
    "e.g. postgresql://user:pass@host/db for many workers."
)
storage_option = click.option("--storage", envvar="TUNER_STORAGE", metavar="URL", help=_STORAGE_HELP)


def workdir_option(help: str) -> Any:
    """``--workdir DIR`` (default ``storage``): where demo corpora, caches and fetched checkpoints are."""
    return click.option(
        "--workdir", type=click.Path(file_okay=False, path_type=Path), default="storage", show_default=True, help=help
    )


def artifacts_option(help: str = "The trials' checkpoint folder (default: as `tuner run`).") -> Any:
    """``--artifacts DIR`` (or ``$TUNER_ARTIFACTS``): the trials' checkpoint folder."""
    return click.option("--artifacts", metavar="DIR", envvar="TUNER_ARTIFACTS", help=help)


def precision_options(default: str) -> Any:
    """``--precision`` and ``--accumulate-grad-batches``, over what ``default`` names (the study file, the export)."""

    def decorate(command: Any) -> Any:
        command = click.option(
            "--accumulate-grad-batches",
            type=click.IntRange(min=1),
            metavar="K",
            help=(
                f"Step the optimizer every K batches, their gradients added up: an effective batch of K x batch_size "
                f"(default: {default})."
            ),
        )(command)
        return click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            help=(
                f"Training precision (default: {default}): 32-true, bf16-mixed (bfloat16 autocast: CPU or a GPU "
                "of compute capability 8.0+) or 16-mixed (float16 autocast with loss scaling: GPU only)."
            ),
        )(command)

    return decorate
