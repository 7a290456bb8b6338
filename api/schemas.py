"""Request and response bodies of the REST API (the OpenAPI schema is generated from these).

A launch body is `evonorm_search.config.SearchConfig` itself; everything the
API returns is a `*Public` model built from the store's frozen records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from db import CandidateStatus, SearchStatus
from primitives import MAX_NODES, OPS, SCHEMA
from primitives.export import ExportFormat
from primitives.ops import INPUT_NAMES, NUM_INPUTS

MAX_ID = 2**53 - 1          # ids are JSON-safe integers; larger ones cannot exist


def _example(value: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


# -- searches ------------------------------------------------------------------


_SEARCH = {
    "id": 1, "name": "quick", "status": "running", "seed": 0, "error": None, "num_candidates": 12,
    "num_evaluated": 7, "num_rejected": 3, "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:01Z", "finished_at": None, "updated_at": "2025-01-01T12:03:00Z",
    "objectives": ["resnet:shapes32", "transformer:pydoc_chars"], "maximise": [True, True], "budget": 48,
    "strategy": "evolution", "active": True, "runner": "coordinator-0:7:4711:1f2e3d4c",
    "runner_heartbeat": "2025-01-01T12:03:00Z", "config": {"name": "quick", "budget": 48}}
_CANDIDATE = {
    "id": 17, "search_id": 1, "status": "evaluated", "formula": "x * sigmoid(v1 * x) / std_group(x)",
    "objectives": [0.61, 0.42], "rejection_stage": None, "generation": 3,
    "mutation": "op n5: tanh(n4) -> sigmoid(n4)", "parent_ids": [9], "reused_from": None,
    "structural_hash": "76a2276f2f18d424f10ee18882fcb9652a582b781af128cadc785de5a88ee106",
    "created_at": "2025-01-01T12:01:00Z", "updated_at": "2025-01-01T12:02:00Z", "rung": 2, "verified": True,
    "estimates": [{"objective": "resnet:shapes32", "mean": 0.61, "stderr": 0.012, "n": 3},
                  {"objective": "transformer:pydoc_chars", "mean": 0.42, "stderr": 0.004, "n": 3}]}
_GRAPH_S0 = {"schema": SCHEMA, "nodes": [
    {"op": "mul", "inputs": [3, 0]}, {"op": "sigmoid", "inputs": [4]}, {"op": "mul", "inputs": [0, 5]},
    {"op": "std_group", "inputs": [0]}, {"op": "div", "inputs": [6, 7]}]}


class SearchPublic(BaseModel):
    model_config = _example(_SEARCH)

    id: int
    name: str
    status: SearchStatus
    seed: int | None
    error: str | None = Field(description="Why the search failed, when it did")
    num_candidates: int
    num_evaluated: int
    num_rejected: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    objectives: list[str] = Field(description="Objective names: one per proxy task (backbone:task), then cost")
    maximise: list[bool] = Field(description="Per objective: accuracies are maximised, the cost minimised")
    budget: int
    core_hours: float = Field(0.0, description="Worker core-hours (GPU-hours on GPU workers) its jobs have "
                                               "run; config.max_core_hours caps it")
    strategy: str
    active: bool = Field(description="A runner of this coordinator is working on it now")
    runner: str | None = Field(None, description="The runner holding the search (host:pid:start:nonce), if any")
    runner_heartbeat: datetime | None = Field(None, description="When that runner last renewed its hold")
    config: dict[str, Any] = Field(description="The full search config (a SearchConfig)")


class StatusCounts(BaseModel):
    pending: int
    evaluating: int
    evaluated: int
    rejected: int


class RunnerProgress(BaseModel):
    in_flight: int
    duplicates: int
    best: list[float] | None


class SearchDetail(SearchPublic):
    model_config = _example({**_SEARCH,
                             "counts": {"pending": 0, "evaluating": 2, "evaluated": 7, "rejected": 3},
                             "rejected_by_stage": {"numeric": 1, "quality": 2},
                             "progress": {"in_flight": 2, "duplicates": 1, "best": [0.61, 0.42]}})

    counts: StatusCounts
    rejected_by_stage: dict[str, int] = Field(description="Rejected candidates per rejection stage")
    progress: RunnerProgress | None = Field(None, description="The live runner's view (None when not running)")


class SearchList(BaseModel):
    model_config = _example({"items": [_SEARCH], "limit": 50, "offset": 0, "last_event_id": 42})

    items: list[SearchPublic]
    limit: int
    offset: int
    last_event_id: int = Field(description="The newest event id: follow /api/events from here for changes")


class PresetsPublic(BaseModel):
    """What the launch form offers: presets (complete configs), tasks, backbones and zoo seeds."""

    default: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    tasks: dict[str, str] = Field(description="Data set name -> kind (image | text)")
    backbones: dict[str, str] = Field(description="Backbone -> layout (nchw | tokens)")
    zoo_seeds: list[str] = Field(description="Zoo layers that can seed a search")


# -- candidates ----------------------------------------------------------------


class EstimatePublic(BaseModel):
    """One objective as an estimate over the seeds of the candidate's highest rung (docs/funnel.md)."""

    objective: str
    mean: float
    stderr: float | None = Field(description="Standard error of the mean; null for n < 2")
    n: int = Field(description="Seeds (training runs) the mean is over")


class ComparisonPublic(BaseModel):
    """A candidate against a baseline on one objective, paired by seed at the candidate's highest rung."""

    baseline: str
    objective: str
    diff: float = Field(description="Mean of candidate - baseline over the paired runs")
    diff_stderr: float | None
    n: int = Field(description="Paired runs (same objective, steps and seed)")
    p: float | None = Field(description="One-sided paired t-test, H1: diff > 0 (null for n < 2)")
    beats: bool = Field(description="diff > 0 at p < 0.05")


class CandidateSummary(BaseModel):
    model_config = _example(_CANDIDATE)

    id: int
    search_id: int
    status: CandidateStatus
    formula: str
    objectives: list[float] | None
    rejection_stage: str | None
    rejection_reason: str | None = Field(None, description="Why it was rejected, in its stage's words")
    generation: int
    mutation: str | None = Field(description="How it was made: seed:<zoo layer>, random, or the mutation")
    parent_ids: list[int]
    reused_from: int | None = Field(description="Functional duplicate of this candidate (its result reused)")
    structural_hash: str
    created_at: datetime
    updated_at: datetime
    rung: int | None = Field(None, description="The highest funnel rung finished (0: the short screen)")
    verified: bool = Field(False, description="Finished the top rung, held-out tasks included")
    estimates: list[EstimatePublic] | None = Field(
        None, description="The objectives as mean, stderr and n at that rung (objectives are the means)")


class CandidatePage(BaseModel):
    model_config = _example({"items": [_CANDIDATE], "total": 12, "limit": 50, "offset": 0, "next_after": 17})

    items: list[CandidateSummary]
    total: int | None = Field(description="Rows matching the filter (None with an `after` cursor)")
    limit: int
    offset: int
    next_after: int | None = Field(
        description="Cursor for `?after=` (the largest id on this page): pass it to get only newer rows")


class EvaluationPublic(BaseModel):
    backbone: str
    task: str
    objective: str
    metrics: dict[str, Any]
    wall_s: float | None
    worker: str | None
    created_at: datetime
    rung: int | None = Field(None, description="The funnel rung the run was made for")
    seed: int | None = Field(None, description="Its seed (initialization and data order)")
    steps: int | None = None


class LineageEntry(BaseModel):
    id: int
    formula: str
    status: CandidateStatus
    generation: int
    mutation: str | None
    objectives: list[float] | None


class Baseline(BaseModel):
    """A zoo layer trained with the search's recipe: a seed, or a baseline run at every rung."""

    name: str
    candidate_id: int
    status: CandidateStatus
    objectives: list[float] | None
    rejection_stage: str | None
    rung: int | None = None
    verified: bool = False
    estimates: list[EstimatePublic] | None = None
    heldout: list[EstimatePublic] = Field(
        default_factory=list, description="Scores on the held-out tasks (verified only; in the front's list)")


class CandidateDetail(CandidateSummary):
    model_config = _example({
        **_CANDIDATE, "search_name": "quick", "objective_names": ["resnet:shapes32", "transformer:pydoc_chars"],
        "maximise": [True, True], "graph": _GRAPH_S0, "batch_dependent": False, "fingerprint": "9c1e0a57d3b2",
        "rejection_reason": None,
        "lineage": [{"id": 9, "formula": "x * tanh(v1 * x) / std_group(x)", "status": "evaluated",
                     "generation": 2, "mutation": "rewire n6: ...", "objectives": [0.58, 0.40]}],
        "evaluations": [{"backbone": "resnet", "task": "shapes32", "objective": "resnet:shapes32",
                         "metrics": {"accuracy": 0.61, "loss": 1.02, "steps": 300}, "wall_s": 31.5,
                         "worker": "node-1:4242", "created_at": "2025-01-01T12:02:00Z"}],
        "evaluations_from": 17,
        "baselines": [{"name": "bn_relu", "candidate_id": 1, "status": "evaluated", "objectives": [0.58, 0.4],
                       "rejection_stage": None}],
        "eps": 1e-5, "class_name": "Candidate17"})

    search_name: str
    objective_names: list[str]
    maximise: list[bool]
    graph: dict[str, Any] = Field(description="The graph as evonorm-graph/1 JSON")
    batch_dependent: bool
    fingerprint: str | None
    rejection_reason: str | None
    lineage: list[LineageEntry] = Field(description="Ancestors, parent first, up to the first generation")
    evaluations: list[EvaluationPublic] = Field(
        description="Per-task training results (a duplicate shows its original's)")
    evaluations_from: int | None = Field(description="Candidate the evaluations belong to")
    baselines: list[Baseline]
    eps: float
    class_name: str = Field(description="Class name in the downloaded module")


# -- front -----------------------------------------------------------------------


class FrontMember(BaseModel):
    id: int
    formula: str
    objectives: list[float] = Field(description="The means of `estimates`")
    origin: str
    generation: int
    zoo_name: str | None
    rung: int | None = Field(None, description="The highest funnel rung finished")
    verified: bool = Field(False, description="Finished the top rung, held-out tasks included")
    estimates: list[EstimatePublic] | None = None
    heldout: list[EstimatePublic] = Field(
        default_factory=list, description="Scores on the held-out tasks (verified members only)")
    comparisons: list[ComparisonPublic] = Field(
        default_factory=list, description="Paired against each baseline at the member's highest rung")


class HypervolumePoint(BaseModel):
    finished: int
    evaluated: int
    hypervolume: float
    at: datetime | None


class FrontPublic(BaseModel):
    model_config = _example({
        "search_id": 1, "objectives": ["resnet:shapes32", "transformer:pydoc_chars"], "maximise": [True, True],
        "members": [{"id": 17, "formula": "x * sigmoid(v1 * x) / std_group(x)", "objectives": [0.61, 0.42],
                     "origin": "seed:evonorm_s0", "generation": 0, "zoo_name": "evonorm_s0"}],
        "baselines": [{"name": "bn_relu", "candidate_id": 1, "status": "evaluated", "objectives": [0.58, 0.4],
                       "rejection_stage": None}],
        "hypervolume": 0.256, "hypervolume_history": [{"finished": 10, "evaluated": 7, "hypervolume": 0.256,
                                                       "at": "2025-01-01T12:02:00Z"}],
        "finished": 10, "evaluated": 7, "rejected": 3, "last_event_id": 42})

    search_id: int
    objectives: list[str]
    maximise: list[bool]
    members: list[FrontMember] = Field(
        description="The non-dominated candidates by their current estimates, best average first; "
                    "`verified` says which have finished the top rung (the others are provisional)")
    verified_members: list[FrontMember] = Field(
        default_factory=list, description="The front of the verified candidates alone")
    baselines: list[Baseline]
    hypervolume: float = Field(description="Against the reference point: accuracy 0, cost 10 (x BN-ReLU)")
    hypervolume_history: list[HypervolumePoint]
    finished: int
    evaluated: int
    rejected: int
    last_event_id: int = Field(description="Event id the front includes; follow /api/events from here")


# -- graphs ------------------------------------------------------------------------


class NodeIn(BaseModel):
    """Node k of the list has id 4 + k; inputs are earlier node ids or the names of the initial nodes."""

    model_config = ConfigDict(extra="forbid")

    # The schema lists the valid values; validation leaves them to the graph, whose messages are clearer.
    op: Annotated[StrictStr, Field(max_length=64, examples=["mul"], json_schema_extra={"enum": list(OPS)})]
    inputs: Annotated[list[StrictInt | StrictStr], Field(max_length=4, examples=[[3, "x"]], json_schema_extra={
        "items": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": NUM_INPUTS + MAX_NODES - 2},
                            {"type": "string", "enum": list(INPUT_NAMES)}]}})]


class GraphIn(BaseModel):
    """A layer graph, `evonorm-graph/1` (see docs/graph-schema.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [{
        "schema": SCHEMA, "nodes": [{"op": "mul", "inputs": ["v1", "x"]}, {"op": "sigmoid", "inputs": [4]},
                                    {"op": "mul", "inputs": ["x", 5]}, {"op": "std_group", "inputs": ["x"]},
                                    {"op": "div", "inputs": [6, 7]}]}]})

    schema_: Annotated[StrictStr, Field(SCHEMA, alias="schema", max_length=64)] = SCHEMA
    nodes: Annotated[list[NodeIn], Field(min_length=1, max_length=MAX_NODES)]

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema_, "nodes": [n.model_dump() for n in self.nodes]}


class GraphInfo(BaseModel):
    model_config = _example({
        "valid": True, "formula": "x * sigmoid(v1 * x) / std_group(x)",
        "structural_hash": "76a2276f2f18d424f10ee18882fcb9652a582b781af128cadc785de5a88ee106",
        "batch_dependent": False, "live_ops": ["mul", "sigmoid", "mul", "std_group", "div"],
        "graph": _GRAPH_S0, "canonical": _GRAPH_S0})

    valid: Literal[True] = True
    formula: str
    structural_hash: str
    batch_dependent: bool
    live_ops: list[str]
    graph: dict[str, Any] = Field(description="The graph as read (input names turned into ids)")
    canonical: dict[str, Any] = Field(description="Canonical form: dead nodes dropped, shared parts merged")


Layout = Literal["nchw", "tokens"]


class ModuleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "graph": {"schema": SCHEMA, "nodes": [{"op": "sigmoid", "inputs": ["x"]},
                                              {"op": "mul", "inputs": ["x", 4]}]},
        "format": "py", "layout": "nchw", "name": "my_swish"}]})

    graph: GraphIn
    format: ExportFormat = ExportFormat.PY
    layout: Layout = "nchw"
    num_features: StrictInt = Field(64, ge=1, le=4096, description="Width traced into torchscript/export files")
    name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
                             description="Layer name; the class is its CamelCase")
    eps: float = Field(1e-5, gt=0, le=1)


# -- zoo / events / system ---------------------------------------------------------


class ZooLayerPublic(BaseModel):
    model_config = _example({
        "name": "evonorm_s0", "class_name": "EvoNormS0", "title": "EvoNorm-S0",
        "source": "Liu et al. 2020 (timm numerics)", "formula": "x * sigmoid(v1 * x) / std_group(x)",
        "in_search_space": True, "batch_dependent": False, "eps": 1e-5, "graph": _GRAPH_S0,
        "structural_hash": "76a2276f2f18d424f10ee18882fcb9652a582b781af128cadc785de5a88ee106"})

    name: str
    class_name: str
    title: str
    source: str
    formula: str
    in_search_space: bool
    batch_dependent: bool
    eps: float
    graph: dict[str, Any] | None
    structural_hash: str | None


class EventPublic(BaseModel):
    model_config = _example({
        "id": 118, "kind": "candidate_finished", "search_id": 1, "candidate_id": 17,
        "payload": {"status": "evaluated", "objectives": [0.61, 0.42], "rejection_stage": None,
                    "reused_from": None}, "created_at": "2025-01-01T12:02:00Z"})

    id: int
    kind: str
    search_id: int | None
    candidate_id: int | None
    payload: dict[str, Any]
    created_at: datetime


class Health(BaseModel):
    model_config = _example({"status": "ok", "database": "postgresql", "runners": 1})

    status: Literal["ok"]
    database: str
    runners: int


class ErrorBody(BaseModel):
    model_config = _example({"detail": "no search with id 42"})

    detail: str


class TransitionErrorBody(BaseModel):
    model_config = _example({"detail": "search 1 is finished: it cannot move to paused", "current": "finished",
                             "requested": "paused"})

    detail: str
    current: str
    requested: str


class FieldError(BaseModel):
    loc: list[str | int]
    field: str = Field(description="The bad field, dotted: tasks.0.task, nodes[2].inputs[0]")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    model_config = _example({"detail": [
        {"loc": ["body", "budget"], "field": "budget", "msg": "Input should be greater than or equal to 1",
         "type": "greater_than_equal"},
        {"loc": ["body", "tasks", 0, "task"], "field": "tasks.0.task",
         "msg": "Value error, unknown task 'imagenet'; known: digits, shapes32, pydoc_chars, cifar10, cifar100",
         "type": "value_error"}]})

    detail: list[FieldError]
