"""Stages with test functions in place of the real ones, injected into `screen` / `evaluate`.

`evaluate(graph, spec, **stages(train=diverging))` runs the standard stage lists with that
function in the stage that calls it; `forbidding("train", ...)` puts in functions that fail the test
if called. No module globals are patched.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers.evaluation import (
    EVALUATE_STAGES,
    SCREEN_STAGES,
    EvalStage,
    FingerprintStage,
    NumericStage,
    QualityStage,
    StabilityStage,
    TrainingStage,
)

# function name -> (the stage that calls it, the stage's field that holds it)
FUNCTIONS: dict[str, tuple[type, str]] = {
    "numeric_check": (NumericStage, "check_fn"),
    "fingerprint": (FingerprintStage, "fingerprint_fn"),
    "stability_stage": (StabilityStage, "stress_fn"),
    "short_train": (QualityStage, "short_train_fn"),
    "train": (TrainingStage, "train_fn"),
}


class Forbidden(BaseException):
    """Not an Exception: no stage turns it into a rejection, so it fails the test."""


def forbidden(*args: Any, **kwargs: Any) -> Any:
    raise Forbidden("called a stage that should have been skipped")


def _swap(stages: tuple[EvalStage, ...], fns: dict[str, Any]) -> tuple[EvalStage, ...]:
    out = []
    for stage in stages:
        for name, fn in fns.items():
            cls, attr = FUNCTIONS[name]
            if isinstance(stage, cls):
                stage = replace(stage, **{attr: fn})  # type: ignore[type-var]
        out.append(stage)
    return tuple(out)


def stages(**fns: Any) -> dict[str, tuple[EvalStage, ...]]:
    """Keyword arguments for `evaluate`: both stage lists with these functions swapped in."""
    unknown = set(fns) - set(FUNCTIONS)
    assert not unknown, f"no stage calls {unknown}"
    return {"stages": _swap(EVALUATE_STAGES, fns), "screen_stages": _swap(SCREEN_STAGES, fns)}


def forbidding(*names: str) -> dict[str, tuple[EvalStage, ...]]:
    return stages(**dict.fromkeys(names, forbidden))
