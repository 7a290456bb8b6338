"""Selection and mutation are reproducible from the seed; tournaments pick from the sample's front."""

from __future__ import annotations

import random

import pytest

from evonorm_search.evolution import AgingEvolution, Individual, RandomSearch, proposal_rng
from primitives import Graph, structural_hash
from primitives.mutation import random_graph
from primitives.zoo import ZOO


def filled(seed: int, size: int = 8, objectives: int = 2) -> AgingEvolution:
    evo = AgingEvolution(population_size=size, tournament_size=3, maximise=[True] * objectives, seed=seed)
    rng = random.Random(1234)
    for i in range(size):
        evo.tell(Individual(i, random_graph(rng), tuple(rng.random() for _ in range(objectives))))
    return evo


def proposals(evo: RandomSearch, start: int, n: int) -> list[tuple[str, tuple[int, ...], str | None]]:
    picks = (evo.propose(k) for k in range(start, start + n))
    return [(structural_hash(p.graph), p.parents, p.mutation) for p in picks]


def test_same_seed_same_children() -> None:
    assert proposals(filled(7), 100, 20) == proposals(filled(7), 100, 20)


def test_different_seed_different_children() -> None:
    assert proposals(filled(7), 100, 20) != proposals(filled(8), 100, 20)


def test_proposal_k_does_not_depend_on_earlier_proposals() -> None:
    """A restarted runner continues at proposal k without replaying 0..k-1."""
    a, b = filled(3), filled(3)
    proposals(a, 0, 10)
    assert proposals(a, 10, 5) == proposals(b, 10, 5)


def test_children_are_mutations_of_population_members() -> None:
    evo = filled(0)
    members = {ind.candidate_id for ind in evo.population}
    for k in range(30):
        p = evo.propose(k)
        assert p.origin == "mutation" and p.mutation
        assert set(p.parents) <= members
        parent = next(i for i in evo.population if i.candidate_id == p.parents[0])
        assert structural_hash(p.graph) != structural_hash(parent.graph)


def test_tournament_winner_is_on_the_sample_front() -> None:
    evo = AgingEvolution(population_size=4, tournament_size=4, maximise=[True, True], seed=0)
    g = ZOO["bn_relu"].graph
    assert g is not None
    # only ids 0 and 1 are non-dominated; 2 and 3 are dominated by 0
    for i, obj in enumerate([(0.9, 0.5), (0.5, 0.9), (0.8, 0.4), (0.1, 0.1)]):
        evo.tell(Individual(i, g, obj))
    picks = {evo.select(proposal_rng(0, k)).candidate_id for k in range(200)}
    assert picks == {0, 1}


def test_aging_drops_the_oldest() -> None:
    evo = filled(0, size=4)
    g = ZOO["relu"].graph
    assert g is not None
    evo.tell(Individual(99, g, (1.0, 1.0)))
    assert [i.candidate_id for i in evo.population] == [1, 2, 3, 99]


def test_seeds_first_then_mutations_of_what_was_evaluated() -> None:
    seeds = [("bn_relu", ZOO["bn_relu"].graph), ("evonorm_s0", ZOO["evonorm_s0"].graph)]
    evo = AgingEvolution(population_size=3, tournament_size=2, maximise=[True], seed=0,
                         seeds=[(n, g) for n, g in seeds if g is not None])
    # nothing evaluated yet (both seeds rejected or in flight): random graphs
    assert [evo.propose(k).origin for k in range(4)] == ["seed:bn_relu", "seed:evonorm_s0", "random", "random"]
    graph = ZOO["bn_relu"].graph
    assert graph is not None
    evo.tell(Individual(1, graph, (0.9,)))
    child = evo.propose(4)
    assert child.origin == "mutation" and child.parents == (1,)


def test_unseeded_evolution_waits_for_a_full_population() -> None:
    evo = AgingEvolution(population_size=3, tournament_size=2, maximise=[True], seed=0)
    rng = random.Random(0)
    for i in range(2):
        evo.tell(Individual(i, random_graph(rng), (rng.random(),)))
    assert evo.propose(2).origin == "random"
    evo.tell(Individual(2, random_graph(rng), (rng.random(),)))
    assert evo.propose(3).origin == "mutation"


def test_breed_after_starts_breeding_before_the_population_is_full_and_it_still_grows() -> None:
    from evonorm_search.config import SearchConfig
    from evonorm_search.evolution import make_strategy

    built = make_strategy(SearchConfig(population_size=5, tournament_size=2, breed_after=2))
    assert isinstance(built, AgingEvolution) and built.breed_after == 2
    evo = AgingEvolution(population_size=5, tournament_size=2, maximise=[True], seed=0, breed_after=2)
    rng = random.Random(0)
    evo.tell(Individual(0, random_graph(rng), (rng.random(),)))
    assert evo.propose(1).origin == "random"
    evo.tell(Individual(1, random_graph(rng), (rng.random(),)))
    assert evo.propose(2).origin == "mutation"
    for i in range(2, 6):
        evo.tell(Individual(i, random_graph(rng), (rng.random(),)))
    assert [i.candidate_id for i in evo.population] == [1, 2, 3, 4, 5]   # grew to 5, then aged


def test_breed_after_larger_than_the_population_is_a_config_error_naming_it() -> None:
    from pydantic import ValidationError

    from evonorm_search.config import SearchConfig

    with pytest.raises(ValidationError, match=r"breed_after \(9\) must not exceed population_size"):
        SearchConfig.model_validate({"population_size": 4, "tournament_size": 2, "breed_after": 9})
    with pytest.raises(ValidationError, match="breed_after"):
        SearchConfig.model_validate({"breed_after": 0})


def test_batch_independent_children_have_no_batch_statistics() -> None:
    evo = AgingEvolution(population_size=4, tournament_size=2, maximise=[True], seed=5, batch_independent=True)
    rng = random.Random(0)
    for i in range(4):
        evo.tell(Individual(i, random_graph(rng, batch_independent=True), (rng.random(),)))
    for k in range(50):
        assert not evo.propose(k).graph.batch_dependent


def test_tournament_larger_than_population_is_refused() -> None:
    with pytest.raises(ValueError, match="tournament_size"):
        AgingEvolution(population_size=2, tournament_size=3, maximise=[True])


def test_the_config_offers_the_registered_strategies_and_the_runner_builds_them() -> None:
    from evonorm_search.config import SearchConfig
    from evonorm_search.evolution import STRATEGIES, AgingEvolution, RandomSearch, make_strategy

    schema = SearchConfig.model_json_schema()
    assert schema["properties"]["strategy"]["enum"] == list(STRATEGIES) == ["evolution", "random"]
    built = {name: make_strategy(SearchConfig(strategy=name, seed_with_zoo=["bn_relu", "layernorm"]))
             for name in STRATEGIES}
    assert type(built["evolution"]) is AgingEvolution and type(built["random"]) is RandomSearch
    first = built["random"].propose(0)
    assert first.origin == "seed:bn_relu" and built["random"].propose(1).origin == "seed:layernorm"
    with pytest.raises(ValueError, match="strategy"):
        SearchConfig.model_validate({"strategy": "annealing"})


def test_normalize_prob_makes_evolution_propose_normalizer_moves() -> None:
    from evonorm_search.config import load_config
    from evonorm_search.evolution import make_strategy

    identity = Graph.build(("add", ["x", "zero"]))
    for prob, expect in ((1.0, True), (0.0, False)):
        strategy = make_strategy(load_config(None, {"population_size": 2, "tournament_size": 1,
                                                    "normalize_prob": prob}))
        strategy.tell(Individual(1, identity, (0.5, 0.5, 0.5)))
        strategy.tell(Individual(2, ZOO["gn_relu"].graph, (0.6, 0.6, 0.6)))   # type: ignore[arg-type]
        kinds = {strategy.propose(k).mutation.split(" ")[0] for k in range(40)}   # type: ignore[union-attr]
        assert bool(kinds & {"normalize", "standardize", "axes"}) is expect, kinds


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_init_normalize_prob_reaches_the_random_draws_of_both_strategies(strategy: str) -> None:
    """The initial population of evolution and every draw of random search use the same generator,
    so an evolution-vs-random comparison differs only in selection."""
    from evonorm_search.config import load_config
    from evonorm_search.evolution import make_strategy
    from primitives.ops import Kind, get_op

    def uses_stat(g: Graph) -> bool:
        return any(i >= 4 and get_op(g.node(i).op).kind is Kind.AGGREGATE for i in g.live_ids())

    for prob in (1.0, 0.0):
        s = make_strategy(load_config(None, {"strategy": strategy, "population_size": 50,
                                             "init_normalize_prob": prob}))
        share = sum(uses_stat(s.propose(k).graph) for k in range(40)) / 40
        assert (share == 1.0) if prob else (share < 0.9), (prob, share)
