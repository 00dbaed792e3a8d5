"""'Unfrozen layers': which blocks of a model train in a trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["LayerStack", "apply_unfrozen_layers"]


@dataclass(frozen=True)
class LayerStack:
    """How an objective's model splits into what always trains and a stack of freezable blocks.

    ``blocks`` run from input to output; ``unfrozen_layers = k`` trains the last ``k`` of them.
    ``head`` always trains (a classifier, an embedding head, a decoder). Parameters in neither are
    frozen whenever ``k`` is given.
    """

    head: Sequence[nn.Module]
    blocks: Sequence[nn.Module]
    block_names: Sequence[str] = ()

    def describe(self, unfrozen_layers: int | None) -> str:
        names = list(self.block_names) or [type(b).__name__ for b in self.blocks]
        if unfrozen_layers is None:
            return "all layers train"
        trained = names[len(names) - unfrozen_layers :] if unfrozen_layers else []
        return f"head + {trained or 'no blocks'}"


def apply_unfrozen_layers(model: nn.Module, stack: LayerStack, unfrozen_layers: int | None) -> None:
    """Set ``requires_grad`` so that only the head and the last ``unfrozen_layers`` blocks train.

    ``None`` trains the whole model. A value above the number of blocks is an error naming the limit.
    """
    if unfrozen_layers is None:
        model.requires_grad_(True)
        return
    if not 0 <= unfrozen_layers <= len(stack.blocks):
        names = ", ".join(stack.block_names) or f"{len(stack.blocks)} blocks"
        raise ValueError(
            f"unfrozen_layers={unfrozen_layers} but this model has {len(stack.blocks)} freezable "
            f"blocks ({names}); use a value in 0..{len(stack.blocks)} in the search space."
        )
    model.requires_grad_(False)
    trained = list(stack.head) + list(stack.blocks[len(stack.blocks) - unfrozen_layers :])
    for module in trained:
        module.requires_grad_(True)
