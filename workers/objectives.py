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
    """Accuracy per (backbone, task) in order, then the cost if it is measured."""
    accuracies = [Objective(task_objective(b, t), True) for b, t in tasks]
    return Objectives(accuracies + ([Objective(COST, False)] if cost else []))

