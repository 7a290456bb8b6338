"""What a finished (or running) search amounts to: its front, hypervolume history, baselines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import CandidateRecord, CandidateStatus, Store
from evonorm_search.domain import CandidateView, SearchView, baselines, search_config
from evonorm_search.funnel import ALPHA, MemberStats, member_stats
from evonorm_search.pareto import front_order, hypervolume, nondominated
from primitives.codegen import LAYOUTS
from primitives.export import ExportFormat, export_bytes
from workers.backbones import backbone_layout


@dataclass(frozen=True)
class FrontMember:
    candidate: CandidateView
    objectives: tuple[float, ...]

    @property
    def candidate_id(self) -> int:
        return self.candidate.id


def evaluated(store: Store, search_id: int) -> list[CandidateRecord]:
    """Evaluated candidates in finish order."""
    rows = store.candidates_by_status(search_id, [CandidateStatus.EVALUATED])
    return sorted((c for c in rows if c.objectives is not None), key=lambda c: (c.updated_at, c.id))


def pareto_front(rows: list[CandidateRecord], maximise: list[bool]) -> list[FrontMember]:
    points = [tuple(c.objectives or ()) for c in rows]
    members = []
    seen: set[tuple[float, ...]] = set()
    for i in nondominated(points, maximise):
        c = rows[i]
        # a functional duplicate has the same point: show the original once
        if c.reused_from is not None and points[i] in seen:
            continue
        seen.add(points[i])
        members.append(FrontMember(CandidateView(c), points[i]))
    return sorted(members, key=lambda m: (*front_order(m.objectives, maximise), m.candidate_id))


def hypervolume_history(rows: list[CandidateRecord], maximise: list[bool], points: int = 50
                        ) -> list[tuple[int, float]]:
    """(candidates evaluated, hypervolume of the front so far) at up to `points` steps."""
    objectives = [tuple(c.objectives or ()) for c in rows]
    if not objectives:
        return []
    step = max(1, len(objectives) // points)
    marks = sorted({*range(step, len(objectives) + 1, step), len(objectives)})
    out = []
    for n in marks:
        front = [objectives[i] for i in nondominated(objectives[:n], maximise)]
        out.append((n, hypervolume(front, maximise)))
    return out


def winners_dir(export_dir: Path, search_id: int) -> Path:
    return export_dir / f"search-{search_id}" / "winners"


def search_layouts(config: Any) -> list[str]:
    """The input layouts a search trained its layers on (held-out tasks too): "nchw" (images), "tokens"."""
    trained = {backbone_layout(t.backbone) for t in [*config.tasks, *config.heldout_tasks]}
    return [layout for layout in LAYOUTS if layout in trained]


def winner_filename(name: str, layout: str) -> str:
    return f"{name}.py" if layout == "nchw" else f"{name}_{layout}.py"


def export_winners(store: Store, search_id: int, out: Path, layouts: list[str] | None = None) -> list[Path]:
    """Write every layer on the search's Pareto front to `out` as a standalone .py module, once per layout
    (default: each layout the search trained on; images as `<name>.py`, tokens as `<name>_tokens.py`)."""
    cfg = search_config(store.get_search(search_id))
    paths = []
    for m in pareto_front(evaluated(store, search_id), cfg.maximise):
        name = m.candidate.module_name
        out.mkdir(parents=True, exist_ok=True)
        for layout in layouts or search_layouts(cfg):
            path = out / winner_filename(name, layout)
            data = export_bytes(m.candidate.graph, ExportFormat.PY, name=name, eps=cfg.eps, layout=layout)
            path.write_bytes(data)
            paths.append(path)
    return paths


def _member_json(c: CandidateRecord, names: list[str], stats: MemberStats | None) -> dict[str, Any]:
    view = CandidateView(c)
    return {
        "id": c.id, "formula": view.formula, "origin": view.origin, "objectives": list(c.objectives or ()),
        "rung": c.rung, "verified": c.verified,
        "estimates": [{"objective": n, **e.to_json()} for n, e in zip(names, c.estimates or (), strict=False)],
        "heldout": [{"objective": o, **e.to_json()} for o, e in (stats.heldout.items() if stats else ())],
        "comparisons": [{"baseline": x.baseline, "objective": x.objective, "diff": x.diff.mean,
                         "diff_stderr": x.diff.stderr, "n": x.diff.n, "p": x.p, "beats": x.beats}
                        for x in (stats.comparisons if stats else ())],
    }


def front_report(store: Store, search_id: int) -> dict[str, Any]:
    """The front as the CLI and the summary JSON show it: every member's estimates (mean, stderr, n),
    rung, verified flag, held-out scores and paired comparisons with the baselines; the verified front
    (members that finished the top rung) beside it; the baselines at the same seeds."""
    search = SearchView.of(store.get_search(search_id))
    cfg = search.config
    if cfg is None:
        raise ValueError(f"search {search_id} has a config this version cannot read")
    rows = evaluated(store, search_id)
    front = pareto_front(rows, cfg.maximise)
    verified = pareto_front([c for c in rows if c.verified], cfg.maximise)
    base = baselines(store, search)
    records = {m.candidate.record.id: m.candidate.record for m in (*front, *verified)}
    stats = member_stats(store, cfg, list(records.values()), base)
    names = cfg.objectives
    return {
        "objectives": names, "maximise": cfg.maximise, "alpha": ALPHA,
        "test": "one-sided paired t-test over seeds at the member's highest rung",
        "members": [_member_json(m.candidate.record, names, stats.get(m.candidate_id)) for m in front],
        "verified_members": [_member_json(m.candidate.record, names, stats.get(m.candidate_id))
                             for m in verified],
        "baselines": [{"name": n, **_member_json(c, names, stats.get(c.id)), "status": c.status.value,
                       "rejection_stage": c.rejection_stage} for n, c in base],
    }
