"""What a search optimises: one objective per proxy task (its accuracy, maximised), and optionally
the layer's relative cost (minimised). Named and directed here only; every layer above asks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

COST = "cost"


@dataclass(frozen=True)
class Objective:
    name: str
    maximise: bool


def task_objective(backbone: object, task: object) -> str:
    """The objective of a backbone trained on a data set, e.g. `resnet:shapes32`."""
    return f"{backbone}:{task}"


def objectives_for(tasks: Iterable[tuple[object, object]], cost: bool = False) -> tuple[Objective, ...]:
    """Accuracy per (backbone, task) in order, then the cost if it is measured."""
    accuracies = tuple(Objective(task_objective(b, t), True) for b, t in tasks)
    return accuracies + ((Objective(COST, False),) if cost else ())
