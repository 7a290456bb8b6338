"""What a search optimises: one objective per proxy task (its accuracy, maximised), and optionally
the layer's relative cost (minimised). Named and directed here only; every layer above asks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

COST = "cost"
# A task trained at micro-batches of n (`TrainConfig.micro_batch`) is another objective than the same
# data set at the full batch: its name says so, `shapes32@mb4`.
MICRO_BATCH_MARK = "@mb"


@dataclass(frozen=True)
class Objective:
    name: str
    maximise: bool


def task_label(task: object, micro_batch: object = None) -> str:
    """The name a proxy task goes by in objectives and in every record of its runs: the data set, with
    `@mb<n>` when each forward pass sees micro-batches of n examples (`shapes32@mb4`). A data set's own
    name never has the mark (`TaskConfig` only takes the known data sets)."""
    return f"{task}" if micro_batch is None else f"{task}{MICRO_BATCH_MARK}{micro_batch}"


def task_objective(backbone: object, task: object) -> str:
    """The objective of a backbone trained on a task (its label, `task_label`), e.g. `resnet:shapes32`
    or `resnet:shapes32@mb4`."""
    return f"{backbone}:{task}"


class Objectives(tuple[Objective, ...]):
    """A search's objectives in order (the order of every objective vector it stores)."""

    @property
    def names(self) -> list[str]:
        return [o.name for o in self]

    @property
    def maximise(self) -> list[bool]:
        """Per objective: True where it is maximised."""
        return [o.maximise for o in self]


def objectives_for(tasks: Iterable[tuple[object, object]], cost: bool = False) -> Objectives:
    """Accuracy per (backbone, task label) in order, then the cost if it is measured."""
    accuracies = [Objective(task_objective(b, t), True) for b, t in tasks]
    return Objectives(accuracies + ([Objective(COST, False)] if cost else []))

