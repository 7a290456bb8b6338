"""Train a backbone with a candidate norm-act layer on a task, with a fixed recipe.

    result = train(factory, "resnet", "shapes32", TrainConfig(steps=200), seed=0)

Each task has a recipe (`RECIPES`): optimizer, learning rate and schedule,
batch size, steps and the backbone sizes that fit the task. A `TrainConfig`
overrides any of it; its None fields keep the recipe's value.

A layer that makes the loss or the gradient non-finite ends training early
with `diverged=True` and a reason instead of raising, since most random
layers of a search do that. On a CPU the run is fp32 and deterministic for
a seed (initialisation and data order both follow it); on a GPU it uses
bfloat16 autocast and channels_last for image models. This module never
changes torch's thread settings: the caller decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workers.backbones import BACKBONES, NormActFactory, build_backbone
from workers.data import ImageData, TextData, get_task

LAYOUT_OF_KIND = {"image": "nchw", "text": "tokens"}


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run besides the layer, backbone and seed."""

    steps: int
    batch_size: int
    optimizer: str                  # "sgd" (Nesterov momentum) or "adamw"
    lr: float                       # peak learning rate
    weight_decay: float             # on weight matrices and kernels only, not on 1-D params
    momentum: float = 0.9           # SGD momentum, or AdamW beta1
    warmup_frac: float = 0.05       # linear warmup, as a fraction of steps
    schedule: str = "cosine"        # "cosine" (to zero) or "constant" after warmup
    grad_clip: float | None = None  # max global gradient norm (a config's math.inf turns it off)
    label_smoothing: float = 0.0
    augment: bool = False           # random crop (pad 4) and horizontal flip, images only
    eval_batch_size: int = 1000
    eval_tokens: int = 65536        # text: evaluate on this many val tokens at most
    # Examples per forward pass (None: the whole batch). Smaller, the gradients of batch_size //
    # micro_batch passes add up to one optimizer step: the same examples and steps, but a layer's
    # batch statistics see only micro_batch examples, as on a GPU with a small per-device batch
    # (where BatchNorm degrades and batch-independent layers can win).
    micro_batch: int | None = None
    # per-backbone constructor kwargs; left out of the hash (a dict), kept in ==
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    # per-backbone recipe fields where they differ from the task's, e.g. {"resnet": {"lr": 0.1}}
    backbone_recipe: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        allowed = {f.name for f in fields(self)} - {"backbones", "backbone_recipe"}
        for backbone, overrides in self.backbone_recipe.items():
            if unknown := sorted(set(overrides) - allowed):
                raise ValueError(f"backbone_recipe[{backbone!r}]: {unknown} are not Recipe fields")


# The CPU recipes train 300 steps in seconds to tens of seconds on two cores.
# On shapes32 the ResNet is ResNet-20 (3 blocks per stage) with its gradient
# clipped at a global norm of 1.0: that makes its layer ranking repeatable
# across seeds (Spearman 0.98 on the 16 zoo graph layers; ResNet-8 at lr
# 0.25 unclipped gave 0.58) while the un-normalized network still trains clearly worse
# (identity 0.70/0.66 vs BN+ReLU 0.80/0.78). Depth is what makes normalization
# pay here: clipped, ResNet-8 and ResNet-14 train identity to BN+ReLU's level.
# docs/proxy.md has the runs behind this.
# The CIFAR recipes are for GPUs: the usual SGD + cosine setting on
# ResNet-20, at a search budget.
CIFAR_BACKBONES: dict[str, dict[str, Any]] = {"resnet": {"blocks": (3, 3, 3)}}
RECIPES: dict[str, Recipe] = {
    "digits": Recipe(steps=300, batch_size=64, optimizer="sgd", lr=0.1, weight_decay=5e-4),
    "shapes32": Recipe(
        steps=300, batch_size=64, optimizer="sgd", lr=0.15, weight_decay=5e-4,
        warmup_frac=0.15, label_smoothing=0.1, backbone_recipe={"resnet": {"grad_clip": 1.0}},
        # stride-2 stems: 16x16 feature maps after the stem, 6x faster on a CPU
        backbones={"resnet": {"stem_stride": 2, "blocks": (3, 3, 3)},
                   "mobilenet": {"stem_stride": 2}},
    ),
    "pydoc_chars": Recipe(steps=300, batch_size=32, optimizer="adamw", lr=3e-3,
                          weight_decay=0.1, grad_clip=1.0),
    "cifar10": Recipe(steps=2000, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4,
                      augment=True, backbones=CIFAR_BACKBONES),
    "cifar100": Recipe(steps=4000, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4,
                       augment=True, backbones=CIFAR_BACKBONES),
}


@dataclass(frozen=True)
class TrainConfig:
    """Overrides of a task's recipe (None keeps it) and where to run.

    backbone_kwargs are merged over the recipe's kwargs for the chosen
    backbone (e.g. {"width_mult": 2.0} or {"placement": "post"}).
    """

    steps: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    warmup_frac: float | None = None
    schedule: str | None = None
    grad_clip: float | None = None
    label_smoothing: float | None = None
    augment: bool | None = None
    eval_batch_size: int | None = None
    eval_tokens: int | None = None
    micro_batch: int | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    device: str | None = None        # default: "cuda" when available, else "cpu"
    amp: bool | None = None          # bfloat16 autocast; default: on for CUDA only
    data_root: str | None = None     # the CIFAR directory (else $EVONORM_DATA_DIR)
    check_every: int | None = None   # steps between non-finite checks; default 1 (CPU), 10 (GPU)


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one run; a diverged run has val_accuracy 0 and val_loss inf."""

    task: str
    backbone: str
    seed: int
    val_accuracy: float    # top-1 for images, next-character accuracy for text
    val_loss: float        # mean cross-entropy (nats)
    train_loss: float      # mean over the last tenth of the steps run
    steps: int             # optimizer steps taken
    steps_per_s: float
    wall_time_s: float     # data, build, training and evaluation
    num_params: int
    diverged: bool = False
    reason: str | None = None
    device: str = "cpu"


def recipe_for(task_name: str, config: TrainConfig | None = None, backbone: str | None = None) -> Recipe:
    """The task's recipe, with the backbone's own fields (`backbone_recipe`) and then the
    config's non-None overrides applied."""
    recipe = RECIPES[get_task(task_name).name]
    if backbone is not None and backbone in recipe.backbone_recipe:
        recipe = replace(recipe, **recipe.backbone_recipe[backbone])
    if config is None:
        return recipe
    names = {f.name for f in fields(Recipe)} - {"backbones", "backbone_recipe"}
    overrides = {n: getattr(config, n) for n in names if getattr(config, n) is not None}
    return replace(recipe, **overrides)


def backbone_kwargs_for(task_name: str, backbone_name: str,
                        config: TrainConfig | None = None) -> dict[str, Any]:
    """The constructor kwargs `train` builds the backbone with (recipe, config, task shape)."""
    task = get_task(task_name)
    config = config or TrainConfig()
    recipe = recipe_for(task_name, config)
    kwargs = {**recipe.backbones.get(backbone_name, {}), **config.backbone_kwargs}
    if task.kind == "image":
        kwargs.setdefault("in_channels", task.input_shape[0])
    else:
        kwargs.setdefault("block_size", task.input_shape[0])
    return kwargs


def lr_at(step: int, recipe: Recipe) -> float:
    warmup = max(1, round(recipe.warmup_frac * recipe.steps))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # No weight decay on 1-D parameters: norm scales and shifts, the
    # candidate's v0/v1, biases. Decaying them would bias the search against
    # layers whose vectors need to grow.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.momentum, 0.95))
    raise ValueError(f"optimizer must be sgd or adamw, got {recipe.optimizer!r}")


def _epochs(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches over seeded per-epoch permutations, dropping the ragged last batch."""
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i: i + batch_size]


def _augment(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random horizontal flip and random crop from a zero-padded (= mean) image, batched."""
    n, c, h, w = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=generator)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


# on_eval(steps taken, val loss, val accuracy)
EvalCallback = Callable[[int, float, float], None]


def train(norm_act_factory: NormActFactory, backbone_name: str, task_name: str,
          config: TrainConfig | None = None, seed: int = 0, *,
          on_eval: EvalCallback | None = None, eval_every: int | None = None) -> TrainResult:
    """Train `backbone_name` with the candidate on `task_name`; see the module docstring.

    The factory must build layers for the backbone's layout ("nchw" for
    resnet/mobilenet, "tokens" for transformer).

    `on_eval`, if given, is called with the validation loss and accuracy every
    `eval_every` steps (default: a tenth of the run) and once at the end with
    the result's values (accuracy 0 and loss inf for a diverged run), so a
    scheduler such as ASHA can see the curve. The evaluations run in eval mode
    and draw no random numbers: a run with a callback trains exactly as one
    without.
    """
    start = time.perf_counter()
    config = config or TrainConfig()
    task = get_task(task_name)
    if backbone_name not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone_name!r}; known: {sorted(BACKBONES)}")
    layout = BACKBONES[backbone_name].layout
    if LAYOUT_OF_KIND[task.kind] != layout:
        raise ValueError(f"backbone {backbone_name!r} ({layout}) cannot run the {task.kind} "
                         f"task {task_name!r}")
    recipe = recipe_for(task_name, config, backbone_name)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = config.amp if config.amp is not None else device.type == "cuda"
    check_every = config.check_every or (1 if device.type == "cpu" else 10)
    every = (eval_every or max(1, recipe.steps // 10)) if on_eval is not None else 0

    data = task.load(config.data_root).to(device)
    kwargs = backbone_kwargs_for(task_name, backbone_name, config)

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    model = build_backbone(backbone_name, norm_act_factory, task.num_classes, **kwargs).to(device)
    channels_last = device.type == "cuda" and isinstance(data, ImageData)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    num_params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, recipe)

    block_size = kwargs.get("block_size", 0)
    micro = recipe.micro_batch or recipe.batch_size
    if micro < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro}")
    batches = _train_batches(data, recipe, generator, block_size, channels_last)
    tail = max(1, recipe.steps // 10)
    tail_loss = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    steps_done = 0
    reason: str | None = None
    eval_time = 0.0
    model.train()
    loop_start = time.perf_counter()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for xs, ys in zip(x.split(micro), y.split(micro), strict=True):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(xs)
            part = F.cross_entropy(logits.float().flatten(0, -2), ys.flatten(),
                                   label_smoothing=recipe.label_smoothing) * (len(xs) / len(x))
            part.backward()
            loss = loss + part.detach()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip or math.inf)
        finite &= torch.isfinite(loss) & torch.isfinite(grad_norm)
        # On a GPU a check is a sync, so it runs every few steps; steps taken
        # after a blow-up only make the parameters non-finite too.
        if ((step + 1) % check_every == 0 or step + 1 == recipe.steps) and not bool(finite):
            reason = (f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} "
                      f"at step {step + 1}" if check_every == 1
                      else f"non-finite loss or gradient by step {step + 1}")
            break
        optimizer.step()
        steps_done = step + 1
        if step >= recipe.steps - tail:
            tail_loss += loss.detach()
        if on_eval is not None and steps_done % every == 0 and steps_done < recipe.steps:
            t = time.perf_counter()
            on_eval(steps_done, *evaluate(model, data, recipe, amp=amp, channels_last=channels_last,
                                          block_size=block_size))
            eval_time += time.perf_counter() - t  # steps_per_s measures training only
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loop_time = time.perf_counter() - loop_start - eval_time
    if reason is None:
        val_loss, val_acc = evaluate(model, data, recipe, amp=amp, channels_last=channels_last,
                                     block_size=block_size)
        if not math.isfinite(val_loss):
            reason = "non-finite validation loss"

    result = TrainResult(
        task=task_name, backbone=backbone_name, seed=seed,
        val_accuracy=0.0 if reason else val_acc,
        val_loss=math.inf if reason else val_loss,
        train_loss=math.inf if reason else float(tail_loss) / max(1, min(tail, steps_done)),
        steps=steps_done,
        steps_per_s=steps_done / loop_time if loop_time > 0 else 0.0,
        wall_time_s=time.perf_counter() - start,
        num_params=num_params,
        diverged=reason is not None,
        reason=reason,
        device=str(device),
    )
    if on_eval is not None:
        on_eval(steps_done, result.val_loss, result.val_accuracy)
    return result


def _train_batches(data: ImageData | TextData, recipe: Recipe, generator: torch.Generator,
                   block_size: int, channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, TextData):
        while True:
            yield data.batch("train", recipe.batch_size, block_size, generator)
    for idx in _epochs(len(data.train_y), recipe.batch_size, generator):
        idx = idx.to(data.train_x.device)
        x = data.normalize(data.train_x[idx])
        if recipe.augment:
            x = _augment(x, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, data.train_y[idx]


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData | TextData, recipe: Recipe, *, amp: bool = False,
             channels_last: bool = False, block_size: int = 64) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the val split, in eval mode; restores train mode.

    Images: every val image. Text: consecutive windows of block_size from
    the start of the val stream, at most recipe.eval_tokens tokens, every
    position scored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if isinstance(data, TextData):
        xs, ys = data.windows("val", block_size, recipe.eval_tokens)
    else:
        xs, ys = data.val_x, data.val_y
    rows = recipe.eval_batch_size
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for i in range(0, len(xs), rows):
        x, y = xs[i: i + rows], ys[i: i + rows]
        if isinstance(data, ImageData):
            x = data.normalize(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float().flatten(0, -2)
        y = y.flatten()
        total_loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(-1) == y).sum()
    model.train(was_training)
    count = ys.numel()
    return float(total_loss) / count, int(correct) / count


def short_train(norm_act_factory: NormActFactory, backbone_name: str, task_name: str,
                steps: int = 100, config: TrainConfig | None = None, seed: int = 0
                ) -> TrainResult:
    """The quality-rejection run: the task's recipe cut to `steps` (100 in the paper).

    The schedule (warmup, cosine) is compressed to the shorter run.
    """
    return train(norm_act_factory, backbone_name, task_name,
                 replace(config or TrainConfig(), steps=steps), seed)
