"""The search configuration: validated, with messages that name the field.

A config is plain JSON/YAML-able data (stored with the search), and turns
into the workers' `EvalSpec` and the strategy. Presets give the two common
starting points; any field can be overridden on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from evonorm_search.evolution import STRATEGIES
from primitives.zoo import ZOO
from workers.backbones import BACKBONES, backbone_layout
from workers.data import TASKS, get_task
from workers.evaluation import EvalSpec, ProxyTask
from workers.executors import Executor, make_executor
from workers.objectives import Objectives, objectives_for, task_label, task_objective
from workers.train import TrainConfig, recipe_for

if TYPE_CHECKING:
    BackboneName = str
    StrategyName = str
else:
    # The registries' names, as Literals: pydantic checks them and the JSON schema lists them.
    BackboneName = Literal[tuple(BACKBONES)]
    StrategyName = Literal[tuple(STRATEGIES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# What each backbone's constructor takes from a config (the trainer sets the rest: classes, input channels),
# with bounds that keep one evaluation to a size a worker can hold. A typo is refused at launch, naming
# the key, instead of every candidate (the baselines too) failing at `error` while the search "finishes".
Size = Annotated[int, Field(ge=1, le=4096)]
Count = Annotated[int, Field(ge=1, le=64)]


class ResNetKwargs(_Strict):
    widths: Annotated[list[Size], Field(min_length=1, max_length=8)] | None = None
    blocks: Annotated[list[Count], Field(min_length=1, max_length=8)] | None = None
    width_mult: Annotated[float, Field(gt=0, le=16)] | None = None
    stem_stride: Annotated[int, Field(ge=1, le=4)] | None = None

    @model_validator(mode="after")
    def _stages(self) -> Self:
        if self.widths is not None and self.blocks is not None and len(self.widths) != len(self.blocks):
            raise ValueError(f"widths ({len(self.widths)} stages) and blocks ({len(self.blocks)}) must "
                             "have the same length")
        return self


class MobileNetKwargs(_Strict):
    setting: Annotated[list[Annotated[list[Annotated[int, Field(ge=1, le=4096)]],
                                      Field(min_length=4, max_length=4)]],
                       Field(min_length=1, max_length=16,
                             description="(expansion t, channels c, repeats n, stride s) rows")] | None = None
    stem_channels: Size | None = None
    last_channels: Size | None = None
    width_mult: Annotated[float, Field(gt=0, le=16)] | None = None
    stem_stride: Annotated[int, Field(ge=1, le=4)] | None = None


class TransformerKwargs(_Strict):
    block_size: Annotated[int, Field(ge=2, le=4096)] | None = None
    n_layer: Count | None = None
    n_head: Annotated[int, Field(ge=1, le=64)] | None = None
    n_embd: Size | None = None
    placement: Literal["pre", "post", "peri", "mix"] | None = None
    mix_post_layers: Annotated[int, Field(ge=0, le=64)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _heads(self) -> Self:
        n_embd, n_head = self.n_embd or 64, self.n_head or 4
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        return self


BACKBONE_KWARGS: dict[str, type[_Strict]] = {
    "resnet": ResNetKwargs, "mobilenet": MobileNetKwargs, "transformer": TransformerKwargs}


def check_backbone_kwargs(backbone: str, kwargs: dict[str, Any]) -> None:
    """ValueError naming the first bad key of `kwargs` for `backbone` (and what it takes)."""
    from pydantic import ValidationError

    model = BACKBONE_KWARGS[backbone]
    try:
        model.model_validate(kwargs, strict=False)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        takes = ", ".join(model.model_fields)
        where = f"backbone_kwargs.{key}" if key else "backbone_kwargs"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"{where}: {msg} ({backbone} takes {takes})") from None


class TaskConfig(_Strict):
    """One proxy task = one objective."""

    backbone: BackboneName
    task: str = Field(description="Data set: " + ", ".join(TASKS))
    steps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        None, description="Training steps (default: the task's recipe)")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | None = None
    # Left out of a dump when None, so a config without it is stored and served exactly as before.
    micro_batch: Annotated[int, Field(ge=1, le=65_536)] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Examples per forward pass (default: the whole batch). Smaller, each step adds up "
                    "the gradients of batch_size / micro_batch passes: the same examples and steps, but "
                    "batch statistics see micro_batch examples (the small-batch regime). Must divide "
                    "the batch size; another objective than the full batch, named `<task>@mb<n>`")
    # Left out of a dump when None, like micro_batch.
    min_steps_frac: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="No rung of the funnel trains this task for less than this fraction of its steps "
                    "(default: each rung's steps_frac). For a task whose short runs do not rank layers as "
                    "its full runs do: the proxy Transformer's rank agreement with the top rung is "
                    "Kendall tau 0.47 after a third of its steps, 0.71 after all of them (docs/funnel.md)")
    lr: Annotated[float, Field(gt=0, le=10)] | None = None
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the backbone (widths, depth, placement, ...)")

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; known: {', '.join(TASKS)}")
        return v

    @field_validator("micro_batch")
    @classmethod
    def _micro_batch_divides(cls, v: int | None, info: ValidationInfo) -> int | None:
        # The fields before it (backbone, task, batch_size) are in info.data when they validated.
        task, backbone, batch_size = (info.data.get(k) for k in ("task", "backbone", "batch_size"))
        if v is None or task is None or backbone is None:
            return v
        batch = batch_size or recipe_for(task, backbone=backbone).batch_size
        where = "batch_size" if batch_size else f"the {task} recipe's batch size for {backbone}"
        if batch % v:
            raise ValueError(f"micro_batch ({v}) must divide {where} ({batch})")
        return v

    @model_validator(mode="after")
    def _backbone_fits_task(self) -> Self:
        check_backbone_kwargs(self.backbone, self.backbone_kwargs)
        layout = backbone_layout(self.backbone)
        kind = get_task(self.task).kind
        if (layout == "tokens") != (kind == "text"):
            raise ValueError(f"backbone {self.backbone!r} ({layout}) cannot train on "
                             f"the {kind} task {self.task!r}")
        return self

    @property
    def label(self) -> str:
        """The task's name in objectives and records (`workers.objectives.task_label`)."""
        return task_label(self.task, self.micro_batch)

    @property
    def objective(self) -> str:
        return task_objective(self.backbone, self.label)

    def proxy_task(self, data_root: str | None) -> ProxyTask:
        return ProxyTask(self.backbone, self.task, TrainConfig(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, micro_batch=self.micro_batch,
            backbone_kwargs=dict(self.backbone_kwargs), data_root=data_root),
            min_steps_frac=self.min_steps_frac or 0.0)


class RejectionConfig(_Strict):
    numeric: bool = True
    stability: bool = True
    stability_steps: int = Field(20, ge=1, le=10_000)
    stability_threshold: float = Field(1e8, gt=0)
    quality: bool = True
    quality_steps: int = Field(100, ge=1, le=1_000_000)
    quality_margin: float = Field(
        1 / 9, ge=0, le=1,
        description="Minimum short-training accuracy as the fraction of the way from chance to 100%")


class RungConfig(_Strict):
    """One rung of the promotion funnel (`evonorm_search.funnel`)."""

    steps_frac: float = Field(gt=0, le=1, description="Fraction of each task's training steps")
    seeds: int = Field(1, ge=1, le=100, description="Seeds per task; every candidate at the rung runs at "
                                                     "the same ones (paired)")
    promote: float = Field(1 / 3, gt=0, le=1, description="Fraction of the rung's finishers that climb to "
                                                          "the next rung (ignored at the top)")


def _default_rungs() -> list[RungConfig]:
    # A short single-seed screen (and the quality check), then the full schedule at 2 seeds for the
    # top third, then 3 seeds plus the held-out tasks for the best of those.
    return [RungConfig(steps_frac=1 / 3, seeds=1, promote=1 / 3),
            RungConfig(steps_frac=1, seeds=2, promote=1 / 2),
            RungConfig(steps_frac=1, seeds=3)]


class SearchConfig(_Strict):
    name: str = Field("search", min_length=1, max_length=200)
    strategy: StrategyName = "evolution"
    budget: int = Field(200, ge=1, le=10_000_000, description="Candidates to generate")
    max_core_hours: float | None = Field(
        None, gt=0, le=1e7, description="Stop proposing once the search's jobs have run this many worker "
                                        "core-hours (GPU-hours on GPU workers); what is in flight, pending "
                                        "and due to climb still finishes. None: the candidate budget alone")
    population_size: int = Field(64, ge=1, le=1_000_000)
    tournament_size: int = Field(8, ge=1, le=1_000_000)
    breed_after: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Evolution breeds once this many evaluated layers are in its population; until then "
                    "it proposes random draws. None: the population size (the paper's warm-up). Without "
                    "zoo seeds most draws are rejected, so a full warm-up can take most of a small budget")
    in_flight: int = Field(2, ge=1, le=100_000, description="Evaluations kept in flight")
    tasks: list[TaskConfig] = Field(min_length=1, max_length=16, default_factory=lambda: [
        TaskConfig(backbone="resnet", task="shapes32"),
        TaskConfig(backbone="mobilenet", task="shapes32"),
        TaskConfig(backbone="transformer", task="pydoc_chars", min_steps_frac=1),
    ])
    rejection: RejectionConfig = Field(default_factory=RejectionConfig)
    rungs: list[RungConfig] = Field(default_factory=_default_rungs, min_length=1, max_length=8,
                                    description="The promotion funnel, lowest rung first")
    heldout_tasks: list[TaskConfig] = Field(
        default_factory=list, max_length=8,
        description="Trained at the top rung only, never selected on: a verified layer has run them")
    baselines: list[str] | None = Field(
        None, max_length=16, description="Zoo layers trained at every rung at the same seeds, to compare "
                                         "against (default: BN-ReLU; GN-ReLU and EvoNorm-S0 too in a "
                                         "batch-independent search)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    batch_independent: bool = Field(False, description="Exclude batch statistics (the S-series search)")
    seed_with_zoo: list[str] = Field(default_factory=list, max_length=64,
                                     description="Zoo layers evaluated first, as seeds of the population")
    rewire_prob: float = Field(0.3, ge=0, le=1)
    normalize_prob: float = Field(
        0.0, ge=0, le=1, description="Share of mutations that build a normalizer: divide a value by a "
                                     "statistic of itself, standardize it, or move a statistic to other axes "
                                     "(primitives.mutation); 0 is the paper's mutation alone")
    init_normalize_prob: float = Field(
        0.0, ge=0, le=1, description="Share of random draws (the initial population; every proposal of the "
                                     "random strategy) given one normalizer move, so they start with a "
                                     "statistic of what they compute; 0 is the paper's uniform draw")
    eps: float = Field(1e-5, gt=0, le=1)
    groups: int = Field(32, ge=1, le=4096, description="Groups of group statistics on images")
    token_groups: int = Field(4, ge=1, le=4096, description="Groups of group statistics on tokens")
    timeout_s: float | None = Field(1800, gt=0, description="Per-candidate time limit")
    num_cpus: float = Field(1, gt=0, le=1024, description="CPUs reserved per evaluation")
    num_gpus: float = Field(0, ge=0, le=64, description="GPUs reserved per evaluation")
    data_root: str | None = Field(None, max_length=4096, description="Local CIFAR directory")
    cost_objective: bool = Field(False, description="Add the layer's fwd+bwd time relative to BN-ReLU "
                                                    "as an objective to minimise")

    @field_validator("seed_with_zoo")
    @classmethod
    def _zoo_names(cls, names: list[str]) -> list[str]:
        for n in names:
            if n not in ZOO:
                raise ValueError(f"unknown zoo layer {n!r}; known: {', '.join(ZOO)}")
            if ZOO[n].graph is None:
                raise ValueError(f"zoo layer {n!r} is outside the search space and cannot seed it")
        return names

    @field_validator("breed_after")
    @classmethod
    def _breed_within_population(cls, v: int | None, info: ValidationInfo) -> int | None:
        # A field error (not the model's), so the REST error and the launch form name this field.
        size = info.data.get("population_size")
        if v is not None and size is not None and v > size:
            raise ValueError(f"breed_after ({v}) must not exceed population_size ({size})")
        return v

    @field_validator("baselines")
    @classmethod
    def _baseline_names(cls, names: list[str] | None) -> list[str] | None:
        for n in names or ():
            if n not in ZOO or ZOO[n].graph is None:
                raise ValueError(f"unknown baseline {n!r}: a zoo layer in the search space is needed; "
                                 f"known: {', '.join(k for k, v in ZOO.items() if v.graph is not None)}")
        return names

    @model_validator(mode="after")
    def _funnel(self) -> Self:
        for i, (lo, hi) in enumerate(zip(self.rungs, self.rungs[1:], strict=False)):
            if hi.steps_frac < lo.steps_frac or hi.seeds < lo.seeds:
                raise ValueError(f"rungs[{i + 1}] must not have fewer steps or seeds than rungs[{i}]")
        clash = {t.objective for t in self.heldout_tasks} & set(self.objectives)
        if clash:
            raise ValueError(f"heldout_tasks {sorted(clash)} are objectives of the search: a held-out task "
                             "is one the search never selects on")
        return self

    @property
    def baseline_names(self) -> list[str]:
        if self.baselines is not None:
            return list(self.baselines)
        return ["bn_relu"] + (["gn_relu", "evonorm_s0"] if self.batch_independent else [])

    @model_validator(mode="after")
    def _sizes(self) -> Self:
        if self.tournament_size > self.population_size:
            raise ValueError(f"tournament_size ({self.tournament_size}) must not exceed "
                             f"population_size ({self.population_size})")
        if self.batch_independent:
            batchy = [n for n in self.seed_with_zoo if ZOO[n].batch_dependent]
            if batchy:
                raise ValueError(f"seed_with_zoo has batch-dependent layers {batchy} "
                                 "in a batch-independent search")
        return self

    @property
    def objective_list(self) -> Objectives:
        return objectives_for(((t.backbone, t.label) for t in self.tasks), self.cost_objective)

    @property
    def objectives(self) -> list[str]:
        return self.objective_list.names

    @property
    def maximise(self) -> list[bool]:
        """Per objective: accuracies are maximised, the cost minimised."""
        return self.objective_list.maximise

    def eval_spec(self) -> EvalSpec:
        r = self.rejection
        return EvalSpec(
            tasks=tuple(t.proxy_task(self.data_root) for t in self.tasks), seed=self.seed, eps=self.eps,
            heldout_tasks=tuple(t.proxy_task(self.data_root) for t in self.heldout_tasks),
            groups=self.groups, token_groups=self.token_groups,
            numeric=r.numeric, stability=r.stability, stability_steps=r.stability_steps,
            stability_threshold=r.stability_threshold, quality=r.quality, quality_steps=r.quality_steps,
            quality_margin=r.quality_margin, time_limit_s=self.timeout_s, measure_cost=self.cost_objective)


PRESETS: dict[str, dict[str, Any]] = {
    # A real front on a 2-core laptop in about ten minutes. MobileNet for
    # images: of the two image objectives (both repeatable across seeds) it
    # has the widest gap between normalizers and identity (docs/proxy.md).
    # Budgeted in compute as well as candidates: proposing stops at 40 candidates or 0.2 core-hours
    # (6 min of 2 workers), whichever comes first; the climbs due then still finish.
    "quick": {
        "name": "quick", "budget": 40, "max_core_hours": 0.2, "population_size": 8, "tournament_size": 3,
        "in_flight": 2,
        "seed_with_zoo": ["bn_relu", "evonorm_s0"],
        "tasks": [
            {"backbone": "mobilenet", "task": "shapes32"},
            # Its full 300 steps at every rung: a third of them ranks layers poorly (docs/funnel.md).
            {"backbone": "transformer", "task": "pydoc_chars", "min_steps_frac": 1},
        ],
        # The default funnel; verification on a backbone and a data set the search never saw.
        "heldout_tasks": [{"backbone": "resnet", "task": "digits"}],
    },
    # The paper's shape on a cluster: three backbones, a large aging population.
    "cluster": {
        "name": "cluster", "budget": 20_000, "population_size": 1000, "tournament_size": 10,
        "in_flight": 256, "num_cpus": 4, "num_gpus": 0.25,
        "seed_with_zoo": ["bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0"],
        "tasks": [
            {"backbone": "resnet", "task": "cifar10", "steps": 2000},
            {"backbone": "mobilenet", "task": "cifar10", "steps": 2000},
            {"backbone": "transformer", "task": "pydoc_chars", "steps": 2000},
            # The small-batch objective (docs/small-batch.md): the same ResNet, data and steps, each
            # forward pass 4 of the 128 images a step sees (the group-norm paper's 4 per GPU). On the
            # CPU proxy BN-ReLU loses 0.06 at 4 (0.13 at 2) and GN-ReLU nothing; 4 costs half the
            # passes of 2, which on a GPU are what a micro-batch step costs.
            {"backbone": "resnet", "task": "cifar10", "steps": 2000, "micro_batch": 4},
        ],
        # A quarter climbs from the short screen, a quarter of those to 5 seeds and CIFAR-100.
        "rungs": [{"steps_frac": 0.25, "seeds": 1, "promote": 0.25},
                  {"steps_frac": 1, "seeds": 2, "promote": 0.25},
                  {"steps_frac": 1, "seeds": 5}],
        "heldout_tasks": [{"backbone": "resnet", "task": "cifar100", "steps": 4000}],
    },
    # Small-batch studies on a CPU (docs/small-batch.md): MobileNetV2 on shapes32 at its batch of 64 and
    # at micro-batches of 4 (the same examples and steps). There BN-ReLU loses 0.11 (3 seeds) and falls
    # under EvoNorm-S0 and GN-ReLU, which compute the same gradients at any micro-batch, for 2.5x the
    # time of a full-batch run (ResNet-20 at 2 loses 0.13 for 5x). Baselines: the layers the EvoNorm
    # paper compares at small batch. Held out, at the top rung only: ResNet-20 at micro-batches of 2.
    "small_batch": {
        "name": "small_batch", "budget": 40, "population_size": 8, "tournament_size": 3, "in_flight": 2,
        "seed_with_zoo": ["bn_relu", "gn_relu", "evonorm_s0", "layernorm"],
        "baselines": ["bn_relu", "gn_relu", "evonorm_s0", "layernorm"],
        "tasks": [
            {"backbone": "mobilenet", "task": "shapes32"},
            {"backbone": "mobilenet", "task": "shapes32", "micro_batch": 4},
        ],
        "heldout_tasks": [{"backbone": "resnet", "task": "shapes32", "micro_batch": 2}],
    },
}


def search_executor(config: SearchConfig, kind: str, address: str | None = None) -> Executor:
    """The executor a search's evaluations run on: in-process, or Ray with the config's resources per
    evaluation (`address`: join that cluster; None: the Ray already started, or a local one)."""
    if kind == "ray":
        return make_executor("ray", address=address, num_cpus=config.num_cpus, num_gpus=config.num_gpus)
    return make_executor(kind)


def backbone_layouts() -> dict[str, str]:
    """Each backbone a task may name, with the layout its candidates see (what a launch form offers)."""
    return {name: backbone_layout(name) for name in BACKBONES}


def task_kinds() -> dict[str, str]:
    """Each data set a task may name, with its kind (image, text)."""
    return {name: task.kind for name, task in TASKS.items()}


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """A preset (or the defaults) with `overrides` on top, validated as a whole.

    A preset's held-out tasks are held out from the preset's own tasks: overriding `tasks` (and
    not `heldout_tasks`) drops those held-out tasks that became objectives.
    """
    data: dict[str, Any] = {}
    overrides = overrides or {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        data.update(PRESETS[preset])
        if "tasks" in overrides and "heldout_tasks" not in overrides and data.get("heldout_tasks"):
            def objective(t: dict[str, Any]) -> str:
                return task_objective(t.get("backbone"), task_label(t.get("task"), t.get("micro_batch")))

            names = {objective(t) for t in overrides["tasks"] if isinstance(t, dict)}
            data["heldout_tasks"] = [t for t in data["heldout_tasks"] if objective(t) not in names]
    data.update(overrides)
    return SearchConfig.model_validate(data)


__all__ = ["BACKBONES", "PRESETS", "RejectionConfig", "RungConfig", "SearchConfig", "TaskConfig", "load_config"]
