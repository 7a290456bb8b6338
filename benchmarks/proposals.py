"""What the search proposes: how often a proposal is a normalizer that survives the zero-training stages.

    python -m benchmarks.proposals [--draws 600]

No training: each proposal goes through the real zero-training stages (static, numeric with the
positional rule, the functional fingerprint) of the quick preset, in milliseconds. For each operator
setting (the paper's: uniform random graphs and single-node mutations; random draws given a
normalizer move, `init_normalize_prob`; normalizer moves among the mutations, `normalize_prob`; both),
two kinds of proposal are counted:

- initial: random draws (the initial population; every proposal of random search);
- children: one mutation of a parent drawn from the initial proposals that passed.

A proposal *normalizes* when a statistic (mean, std, moment2, rms over any axes) of a value that
depends on x is live and the output depends on it through a division or a subtraction: the shape
"statistic, then subtract or divide" that BN, GN, LN, RMSNorm and the EvoNorms share. Reported:
the share that pass, the share that pass and normalize, and the distinct fingerprints among those.
Raw numbers: benchmarks/results/proposals.json.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from evonorm_search.config import load_config
from primitives import Graph
from primitives.mutation import mutate, random_graph
from primitives.ops import NUM_INPUTS, Kind, get_op
from workers.evaluation import screen

RESULTS = Path(__file__).resolve().parent / "results" / "proposals.json"
SETTINGS = {"paper": (0.0, 0.0), "init_normalize 0.5": (0.5, 0.0), "normalize moves 0.25": (0.0, 0.25),
            "both (discovery searches)": (0.5, 0.25)}


def normalizes(g: Graph) -> bool:
    live = g.live_ids()

    def depends_on_x(i: int, seen: dict[int, bool]) -> bool:
        if i < NUM_INPUTS:
            return i == 0
        if i not in seen:
            seen[i] = any(depends_on_x(j, seen) for j in g.node(i).inputs)
        return seen[i]

    memo: dict[int, bool] = {}
    stats = {i for i in live if i >= NUM_INPUTS and get_op(g.node(i).op).kind is Kind.AGGREGATE
             and depends_on_x(i, memo)}
    if not stats:
        return False

    def reaches_stat(i: int) -> bool:
        return i in stats or (i >= NUM_INPUTS and get_op(g.node(i).op).kind is Kind.ELEMENTWISE
                              and any(reaches_stat(j) for j in g.node(i).inputs))

    for i in live:
        if i < NUM_INPUTS:
            continue
        n = g.node(i)
        if n.op == "div" and reaches_stat(n.inputs[1]):
            return True
        if n.op == "add" and any(g.node(j).op == "neg" and reaches_stat(g.node(j).inputs[0])
                                 for j in n.inputs if j >= NUM_INPUTS):
            return True
    return False


def measure(draws: int, seed: int = 0) -> dict[str, Any]:
    spec = load_config("quick", {}).eval_spec()
    out: dict[str, Any] = {}
    for name, (init_p, mut_p) in SETTINGS.items():
        rng = random.Random(seed)
        row: dict[str, Any] = {"init_normalize_prob": init_p, "normalize_prob": mut_p}
        passed: list[Graph] = []
        for kind in ("initial", "children"):
            n_pass = n_norm = 0
            fps: set[str] = set()
            for _ in range(draws):
                if kind == "initial":
                    g = random_graph(rng, normalize_prob=init_p)
                else:
                    g, _ = mutate(rng.choice(passed), rng, normalize_prob=mut_p)
                s = screen(g.dumps(), spec)
                if s.rejection is None:
                    n_pass += 1
                    if kind == "initial":
                        passed.append(g)
                    if normalizes(g):
                        n_norm += 1
                        fps.add(s.fingerprint or "")
            row[kind] = {"proposals": draws, "pass_zero_training": n_pass / draws,
                         "pass_and_normalize": n_norm / draws, "distinct_normalizers": len(fps)}
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=600)
    args = parser.parse_args()
    out = measure(args.draws)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'setting':28s} {'kind':9s} {'pass':>6s} {'pass+normalize':>15s} {'distinct':>9s}")
    for name, row in out.items():
        for kind in ("initial", "children"):
            r = row[kind]
            print(f"{name:28s} {kind:9s} {r['pass_zero_training']:6.1%} {r['pass_and_normalize']:15.1%} "
                  f"{r['distinct_normalizers']:9d}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
