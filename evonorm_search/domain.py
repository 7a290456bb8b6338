"""Searches and candidates as everything above the store reads them: built once from store records.

The store hands out plain records (a graph as JSON text, a config as a dict, an origin as a
string like "seed:bn_relu"). What they mean is worked out here, once: a `SearchView` carries the
validated config (None when a stored config no longer validates: an old search, a changed schema)
and the objectives with their names and directions; a `CandidateView` carries the parsed graph, its
formula, the zoo layer a seed is and the name its module is exported under. The CLI, the API's
views, the live front, rerank and the exports read these instead of re-deriving them.

Parsing and validation are cached per process by content (a graph's JSON text, a config's JSON),
not by id, so two databases in one process never share a wrong entry; a record is immutable, so
the cache never goes stale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from db import CandidateRecord, SearchRecord, Store
from evonorm_search.config import SearchConfig
from primitives import Graph, formula, structural_hash
from primitives.compile import class_name_for
from workers.objectives import Objective, Objectives, objectives_for, task_label, task_objective

SEED_PREFIX = "seed:"
BASELINE_PREFIX = "baseline:"     # a baseline measured beside the proposals (`evonorm_search.runner`)
DEFAULT_EPS = 1e-5

__all__ = ["CandidateView", "Objective", "SearchView", "baselines", "layer_name", "parse_graph",
           "search_config", "task_objective", "zoo_name"]


# -- configs -----------------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _validated(config_json: str) -> SearchConfig | ValueError:
    try:
        return SearchConfig.model_validate(json.loads(config_json))
    except ValueError as e:   # pydantic's ValidationError is a ValueError
        return e


def search_config(search: SearchRecord | Mapping[str, Any]) -> SearchConfig:
    """A search's config, validated once per process; raises the ValidationError if it is invalid."""
    config = search.config if isinstance(search, SearchRecord) else search
    result = _validated(json.dumps(config, sort_keys=True))
    if isinstance(result, ValueError):
        raise result
    return result


@dataclass(frozen=True)
class SearchView:
    record: SearchRecord
    config: SearchConfig | None            # None: the stored config no longer validates
    objectives: Objectives                 # names and directions
    seeds: tuple[str, ...]                 # the zoo layers it was seeded with

    @classmethod
    def of(cls, record: SearchRecord) -> SearchView:
        try:
            config: SearchConfig | None = search_config(record)
        except ValueError:
            config = None
        if config is not None:
            objectives = config.objective_list
        else:   # read what the old config says: its tasks, all maximised
            tasks = [t for t in record.config.get("tasks") or [] if isinstance(t, dict)]
            objectives = objectives_for((t.get("backbone"), task_label(t.get("task"), t.get("micro_batch")))
                                        for t in tasks)
        seeds = tuple(s for s in record.config.get("seed_with_zoo") or [] if isinstance(s, str))
        return cls(record, config, objectives, seeds)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def eps(self) -> float:
        return float(self.record.config.get("eps", DEFAULT_EPS))


# -- candidates -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedGraph:
    graph: Graph | None                    # None: the stored JSON is not a valid graph
    formula: str


@lru_cache(maxsize=100_000)
def parse_graph(graph_json: str) -> ParsedGraph:
    """A stored graph's JSON text, parsed once per process (tables show thousands of formulas)."""
    try:
        graph = Graph.loads(graph_json)
    except ValueError:
        return ParsedGraph(None, "(invalid graph)")
    return ParsedGraph(graph, formula(graph))


def zoo_name(origin: str | None) -> str | None:
    """The zoo layer a seed or a baseline is ("seed:bn_relu" -> "bn_relu"), None for any other origin."""
    origin = origin or ""
    for prefix in (SEED_PREFIX, BASELINE_PREFIX):
        if origin.startswith(prefix):
            return origin[len(prefix):]
    return None


def layer_name(graph: Graph) -> str:
    """The name of a layer that has none (a graph given as JSON): `layer_<structural hash>`."""
    return f"layer_{structural_hash(graph)[:8]}"


@dataclass(frozen=True)
class CandidateView:
    record: CandidateRecord

    @classmethod
    def of(cls, record: CandidateRecord) -> CandidateView:
        return cls(record)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def parsed(self) -> ParsedGraph:
        return parse_graph(self.record.graph)

    @property
    def graph(self) -> Graph:
        g = self.parsed.graph
        if g is None:
            raise ValueError(f"candidate {self.record.id} has an invalid graph")
        return g

    @property
    def formula(self) -> str:
        return self.parsed.formula

    @property
    def origin(self) -> str:
        return self.record.mutation or ""

    @property
    def zoo_name(self) -> str | None:
        return zoo_name(self.record.mutation)

    @property
    def module_name(self) -> str:
        """The exported layer's name: the zoo layer a seed is, else candidate_<id>."""
        return self.zoo_name or f"candidate_{self.record.id}"

    @cached_property
    def class_name(self) -> str:
        return class_name_for(self.module_name, self.graph)


def baselines(store: Store, search: SearchView) -> list[tuple[str, CandidateRecord]]:
    """Zoo layers trained with the search's recipe (evaluated or rejected): its seeds, and the
    baselines it measures at every rung (`SearchConfig.baselines`).

    Both are added before any other proposal, so they are the search's first rows.
    """
    extra = len(search.config.baseline_names) if search.config is not None else 0
    if not search.seeds and not extra:
        return []
    first = store.list_candidates(search.id, limit=len(search.seeds) + extra)
    return [(name, c) for c in first if (name := zoo_name(c.mutation)) is not None]
