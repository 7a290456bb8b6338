"""Search strategies: multi-objective aging evolution, and random search as the baseline.

Evolution (Real et al.'s regularized evolution with the EvoNorm paper's
multi-objective tournament): the population holds the most recent
`population_size` evaluated candidates; a tournament samples
`tournament_size` of them, keeps that sample's Pareto front, and picks the
parent at random from it; the child is the parent mutated once. Until the
population is full, proposals are random graphs, as in the paper; a search
seeded with zoo layers proposes the seeds first and then evolves from
whatever of them has been evaluated, since most random graphs are rejected
and a random fill would spend a small budget on them. For the same reason a
search can start breeding earlier from random draws (`breed_after`: once
that many evaluated layers are in the population); the population still
grows to its size, and only then do the oldest leave.

Each proposal k draws from its own generator seeded by (seed, k), so a
search is reproducible from its seed given the same order of results, and a
restarted runner continues the same sequence without saving RNG state.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from evonorm_search.pareto import nondominated
from primitives import Graph
from primitives.mutation import mutate, random_graph
from primitives.zoo import ZOO

if TYPE_CHECKING:
    from evonorm_search.config import SearchConfig


@dataclass(frozen=True)
class Individual:
    candidate_id: int
    graph: Graph
    objectives: tuple[float, ...]


@dataclass(frozen=True)
class Proposal:
    graph: Graph
    parents: tuple[int, ...] = ()
    mutation: str | None = None       # None: a random graph or a seed
    origin: str = "random"            # random | seed:<zoo name> | mutation


def proposal_rng(seed: int, k: int) -> random.Random:
    return random.Random(f"evonorm:{seed}:{k}")


class Strategy(Protocol):
    """What the runner drives: `propose(k)` the k-th candidate of the search (reproducible from the
    seed and the results told so far), `tell` an evaluated one, `revise` one whose estimates changed."""

    def propose(self, k: int) -> Proposal: ...

    def tell(self, individual: Individual) -> None: ...

    def revise(self, individual: Individual) -> None:
        """A member's objectives were re-estimated (it climbed a funnel rung)."""


class RandomSearch:
    """Uniformly random graphs (the paper's generator): the baseline at equal budget."""

    def __init__(self, *, seed: int = 0, batch_independent: bool = False,
                 seeds: Sequence[tuple[str, Graph]] = (), init_normalize_prob: float = 0.0) -> None:
        self.seed = seed
        self.batch_independent = batch_independent
        self.seeds = list(seeds)
        self.init_normalize_prob = init_normalize_prob

    def propose(self, k: int) -> Proposal:
        if k < len(self.seeds):
            name, graph = self.seeds[k]
            return Proposal(graph, origin=f"seed:{name}")
        return Proposal(random_graph(proposal_rng(self.seed, k), batch_independent=self.batch_independent,
                                     normalize_prob=self.init_normalize_prob))

    def tell(self, individual: Individual) -> None:
        pass

    def revise(self, individual: Individual) -> None:
        """A member's objectives were re-estimated (it climbed a funnel rung)."""


class AgingEvolution(RandomSearch):
    def __init__(self, *, population_size: int, tournament_size: int, maximise: Sequence[bool],
                 seed: int = 0, batch_independent: bool = False, rewire_prob: float = 0.3,
                 normalize_prob: float = 0.0, init_normalize_prob: float = 0.0,
                 seeds: Sequence[tuple[str, Graph]] = (), breed_after: int | None = None) -> None:
        super().__init__(seed=seed, batch_independent=batch_independent, seeds=seeds,
                         init_normalize_prob=init_normalize_prob)
        if not 1 <= tournament_size <= population_size:
            raise ValueError("need 1 <= tournament_size <= population_size")
        if breed_after is not None and not 1 <= breed_after <= population_size:
            raise ValueError("need 1 <= breed_after <= population_size")
        self.breed_after = population_size if breed_after is None else breed_after
        self.population: deque[Individual] = deque(maxlen=population_size)
        self.tournament_size = tournament_size
        self.maximise = list(maximise)
        self.rewire_prob = rewire_prob
        self.normalize_prob = normalize_prob

    def tell(self, individual: Individual) -> None:
        """An evaluated candidate joins; the oldest leaves once the population is full."""
        self.population.append(individual)

    def revise(self, individual: Individual) -> None:
        """Replace the member's objectives in place (its age is unchanged); gone members stay gone."""
        for i, member in enumerate(self.population):
            if member.candidate_id == individual.candidate_id:
                self.population[i] = individual
                return

    def select(self, rng: random.Random) -> Individual:
        sample = rng.sample(list(self.population), min(self.tournament_size, len(self.population)))
        front = nondominated([ind.objectives for ind in sample], self.maximise)
        return sample[rng.choice(front)]

    def propose(self, k: int) -> Proposal:
        ready = len(self.population) >= self.breed_after or (bool(self.seeds) and bool(self.population))
        if k < len(self.seeds) or not ready:
            return super().propose(k)
        rng = proposal_rng(self.seed, k)
        parent = self.select(rng)
        child, mutation = mutate(parent.graph, rng, batch_independent=self.batch_independent,
                                 rewire_prob=self.rewire_prob, normalize_prob=self.normalize_prob)
        return Proposal(child, (parent.candidate_id,), mutation.description, "mutation")


# -- the registry: a search config's `strategy` names one of these -----------------------------------

Seeds = Sequence[tuple[str, Graph]]
STRATEGIES: dict[str, Callable[[SearchConfig, Seeds], Strategy]] = {}


def register(name: str) -> Callable[[Callable[[SearchConfig, Seeds], Strategy]],
                                    Callable[[SearchConfig, Seeds], Strategy]]:
    """Register a factory `(config, zoo seeds) -> Strategy` under a name the config accepts."""
    def add(factory: Callable[[SearchConfig, Seeds], Strategy]) -> Callable[[SearchConfig, Seeds], Strategy]:
        STRATEGIES[name] = factory
        return factory

    return add


@register("evolution")
def _evolution(config: SearchConfig, seeds: Seeds) -> Strategy:
    return AgingEvolution(
        population_size=config.population_size, tournament_size=config.tournament_size,
        maximise=config.maximise, seed=config.seed, batch_independent=config.batch_independent,
        rewire_prob=config.rewire_prob, normalize_prob=config.normalize_prob,
        init_normalize_prob=config.init_normalize_prob, seeds=seeds, breed_after=config.breed_after)


@register("random")
def _random(config: SearchConfig, seeds: Seeds) -> Strategy:
    return RandomSearch(seed=config.seed, batch_independent=config.batch_independent, seeds=seeds,
                        init_normalize_prob=config.init_normalize_prob)


def make_strategy(config: SearchConfig) -> Strategy:
    """The config's strategy, seeded with its zoo layers (those in the search space)."""
    seeds = [(n, g) for n in config.seed_with_zoo if (g := ZOO[n].graph) is not None]
    return STRATEGIES[config.strategy](config, seeds)
