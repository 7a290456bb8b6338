"""The promotion funnel: objectives as multi-seed estimates, and who climbs to the next rung.

A search's rungs (`SearchConfig.rungs`) rise in fidelity: more steps, more
seeds, and at the top the held-out tasks. Every candidate that survives the
zero-training stages runs rung 0; after that only a promising fraction
climbs, asynchronously, as in ASHA (Li et al. 2020): whenever a candidate
finishes rung r, those in the top `promote` fraction of everything that has
finished rung r so far, and have not climbed yet, are sent to rung r + 1. No
worker waits for a rung to fill. Ranking is multi-objective: Pareto rank on
the rung-r means first, then the mean of the maximised objectives. The
search's baselines climb every rung unconditionally (and take no place in
the quota), so each rung has them at the same seeds to compare against.

A candidate's objective is the mean over the seeds of its highest rung, with
its standard error and n; evolution selects on these estimates and the front
is drawn from them. Runs are keyed (objective, steps, seed): a higher rung
with the same steps reuses the lower rung's runs at its seeds and only trains
the new ones, and rung seeds are nested (rung r's seeds start with rung
r-1's).

"Beats a baseline" is a statistical claim: the paired differences (candidate
minus baseline, same objective, steps and seed) have a positive mean at
p < 0.05 under a one-sided paired t-test (n - 1 degrees of freedom). With
fewer than two pairs there is no test and no claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from db import CandidateRecord, Estimate, EvaluationRecord, Store
from evonorm_search.config import SearchConfig
from evonorm_search.pareto import pareto_ranks
from workers.evaluation import EvalSpec
from workers.funnel import RungSpec, RunKey, rung_steps, task_steps
from workers.objectives import task_objective

ALPHA = 0.05


def estimate(values: Sequence[float]) -> Estimate:
    """Mean, standard error of the mean (None for n < 2), n."""
    n = len(values)
    if n == 0:
        raise ValueError("an estimate needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(var / n), n)


@dataclass(frozen=True)
class Comparison:
    """A candidate against a baseline on one objective, paired by seed."""

    objective: str
    baseline: str
    diff: Estimate              # of candidate - baseline over the pairs
    p: float | None             # one-sided paired t-test, H1: mean difference > 0

    @property
    def beats(self) -> bool:
        return self.p is not None and self.p < ALPHA and self.diff.mean > 0


def paired_p(diffs: Sequence[float]) -> float | None:
    """One-sided paired t-test p-value that the mean difference is > 0 (None for n < 2).

    Identical differences have no spread: p is 0 when they are all positive, 1 otherwise.
    """
    if len(diffs) < 2:
        return None
    if max(diffs) - min(diffs) <= 1e-12:
        return 0.0 if diffs[0] > 0 else 1.0
    result = stats.ttest_1samp(list(diffs), 0.0, alternative="greater")
    return float(result.pvalue)


def compare(candidate: Mapping[RunKey, float], baseline: Mapping[RunKey, float], objective: str,
            baseline_name: str, keys: Iterable[RunKey] | None = None) -> Comparison | None:
    """Pair the two layers' runs of `objective` (at `keys`, else every key both have)."""
    wanted = [k for k in (keys if keys is not None else candidate) if k[0] == objective]
    pairs = [candidate[k] - baseline[k] for k in wanted if k in candidate and k in baseline]
    if not pairs:
        return None
    return Comparison(objective, baseline_name, estimate(pairs), paired_p(pairs))


class Funnel:
    """The rung plan of one search, every candidate's runs, and the promotion rule."""

    def __init__(self, spec: EvalSpec, rungs: Sequence[tuple[float, int, float]], seed: int,
                 maximise: Sequence[bool]) -> None:
        """`rungs`: (steps_frac, seeds, promote) per rung, lowest first; seeds are seed, seed+1, ..."""
        self.spec = spec
        self.maximise = list(maximise)
        top = len(rungs) - 1
        self.rungs = [RungSpec(i, frac, tuple(range(seed, seed + n)), top=i == top)
                      for i, (frac, n, _) in enumerate(rungs)]
        self.promote = [p for _, _, p in rungs]
        self.runs: dict[int, dict[RunKey, float]] = {}
        self.cost: dict[int, float] = {}

    @property
    def top(self) -> int:
        return len(self.rungs) - 1

    def keys(self, rung: int, heldout: bool = False) -> list[RunKey]:
        """The runs that make up rung `rung`'s estimates (of the held-out tasks, if asked)."""
        r = self.rungs[rung]
        if heldout:
            return [(t.objective, task_steps(t), s) for t in self.spec.heldout_tasks for s in r.seeds]
        return [(t.objective, rung_steps(t, r.steps_frac), s) for t in self.spec.tasks for s in r.seeds]

    def add(self, candidate_id: int, runs: Iterable[tuple[RunKey, float]]) -> None:
        self.runs.setdefault(candidate_id, {}).update(runs)

    def done(self, candidate_id: int) -> frozenset[RunKey]:
        return frozenset(self.runs.get(candidate_id, {}))

    def has_rung(self, candidate_id: int, rung: int) -> bool:
        have = self.runs.get(candidate_id, {})
        return all(k in have for k in self.keys(rung))

    def estimates(self, candidate_id: int, rung: int) -> list[Estimate]:
        """The objectives at `rung`: one estimate per task, then the cost if measured."""
        have = self.runs.get(candidate_id, {})
        out = []
        for t in self.spec.tasks:
            values = [have[k] for k in self.keys(rung) if k[0] == t.objective and k in have]
            if not values:
                raise KeyError(f"candidate {candidate_id} has no {t.objective} runs at rung {rung}")
            out.append(estimate(values))
        if self.spec.measure_cost:
            out.append(Estimate(self.cost[candidate_id], None, 1))
        return out

    def heldout(self, candidate_id: int) -> dict[str, Estimate]:
        have = self.runs.get(candidate_id, {})
        out: dict[str, Estimate] = {}
        for t in self.spec.heldout_tasks:
            values = [have[k] for k in self.keys(self.top, heldout=True) if k[0] == t.objective and k in have]
            if values:
                out[t.objective] = estimate(values)
        return out

    def promotions(self, rung_of: Mapping[int, int], *, baselines: Iterable[int] = (),
                   busy: Iterable[int] = (), final: bool = False) -> list[tuple[int, int]]:
        """(candidate, rung to run next) for everyone due to climb now.

        `rung_of` maps each evaluated original to its highest finished rung;
        `busy` are those with a job in flight or that failed to climb. ASHA's
        quota is floor(promote x finishers) while the search runs; at the end
        (`final`) at least one candidate of a rung climbs, so a small search
        still verifies its best.
        """
        base, skip = set(baselines), set(busy)
        out = [(c, r + 1) for c, r in rung_of.items() if c in base and r < self.top and c not in skip]
        for r in range(self.top):
            finished = [c for c, reached in rung_of.items() if reached >= r and c not in base]
            if not finished:
                continue
            quota = math.floor(len(finished) * self.promote[r] + 1e-9)
            if final:
                quota = max(1, quota)
            if quota == 0:
                continue
            points = [[e.mean for e in self.estimates(c, r)] for c in finished]
            ranks = pareto_ranks(points, self.maximise)
            up = [m for m in self.maximise if m]
            order = sorted(range(len(finished)), key=lambda i: (
                ranks[i], -sum(v for v, m in zip(points[i], self.maximise, strict=True) if m) / max(1, len(up)),
                finished[i]))
            out += [(finished[i], r + 1) for i in order[:quota]
                    if rung_of[finished[i]] == r and finished[i] not in skip]
        return out


def funnel_for(config: SearchConfig) -> Funnel:
    """The rung plan of a search's config."""
    return Funnel(config.eval_spec(), [(r.steps_frac, r.seeds, r.promote) for r in config.rungs], config.seed,
                  config.maximise)


def runs_of(evaluations: Iterable[EvaluationRecord]) -> dict[RunKey, float]:
    """A candidate's stored runs by (objective, steps, seed); rows from before the funnel have none."""
    return {(task_objective(e.backbone, e.task), e.steps, e.seed): float(e.metrics["accuracy"])
            for e in evaluations if e.rung is not None and e.steps is not None and e.seed is not None}


@dataclass(frozen=True)
class MemberStats:
    """What a reader needs beside a candidate's estimates: its held-out scores and its paired
    comparisons with each baseline at its highest rung."""

    heldout: dict[str, Estimate]
    comparisons: tuple[Comparison, ...]


def member_stats(store: Store, config: SearchConfig, members: Sequence[CandidateRecord],
                 baselines: Sequence[tuple[str, CandidateRecord]]) -> dict[int, MemberStats]:
    """Held-out estimates and paired comparisons for `members` and for the baselines themselves (a
    verified baseline has held-out scores as any verified member does; a functional duplicate reads
    its original's runs). One query for all their runs."""
    funnel = funnel_for(config)
    members = list({c.id: c for c in (*members, *(b for _, b in baselines))}.values())
    owner = {c.id: c.reused_from or c.id for c in members}
    evals = store.evaluations_for_candidates({*owner.values(), *(b.id for _, b in baselines)})
    runs = {cid: runs_of(es) for cid, es in evals.items()}
    out: dict[int, MemberStats] = {}
    for c in members:
        mine = runs.get(owner[c.id], {})
        funnel.runs[c.id] = mine
        comparisons: list[Comparison] = []
        if c.rung is not None:
            keys = funnel.keys(c.rung)
            for name, b in baselines:
                if b.id == owner[c.id]:
                    continue
                for objective in (o.name for o in config.objective_list if o.maximise):
                    cmp = compare(mine, runs.get(b.id, {}), objective, name, keys)
                    if cmp is not None:
                        comparisons.append(cmp)
        heldout = funnel.heldout(c.id) if c.rung == funnel.top else {}
        out[c.id] = MemberStats(heldout, tuple(comparisons))
    return out
