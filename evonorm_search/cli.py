"""The `evonorm-search` command line."""

from __future__ import annotations

import json
import re
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from primitives import Graph, GraphError, formula, structural_hash
from primitives.export import ExportFormat, export_bytes
from primitives.zoo import ZOO

app = typer.Typer(help="Evolutionary search for normalization-activation layers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)


class Layout(StrEnum):
    NCHW = "nchw"
    TOKENS = "tokens"


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def resolve_graph(spec: str) -> tuple[Graph, str | None, float]:
    """A zoo name, a path to a graph JSON file, or graph JSON text -> (graph, name, eps)."""
    if spec in ZOO:
        layer = ZOO[spec]
        if layer.graph is None:
            raise fail(f"{spec} is outside the search space (a hand-written module); it has no graph")
        return layer.graph, layer.class_name, layer.eps
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise fail(f"{spec!r} is neither a zoo layer ({', '.join(ZOO)}), a file, nor graph JSON")
        text = path.read_text()
    try:
        return Graph.loads(text), None, 1e-5
    except GraphError as e:
        raise fail(f"invalid graph: {e}") from None


@app.command()
def zoo(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the layer zoo with formulas."""
    rows = [{"name": layer.name, "title": layer.title, "formula": layer.formula,
             "in_search_space": layer.in_search_space, "batch_dependent": layer.batch_dependent,
             "eps": layer.eps, "source": layer.source,
             "graph": layer.graph.to_json() if layer.graph else None,
             "hash": structural_hash(layer.graph) if layer.graph else None} for layer in ZOO.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Layer zoo (output before the per-channel affine)")
    for col in ("name", "layer", "formula", "batch"):
        table.add_column(col)
    for r in rows:
        name = r["name"] if r["in_search_space"] else f"{r['name']} [dim](hand-written)[/]"
        table.add_row(str(name), str(r["title"]), str(r["formula"]), "yes" if r["batch_dependent"] else "")
    console.print(table)


@app.command()
def export(
    layer: Annotated[str, typer.Argument(help="Zoo name, graph JSON file, or graph JSON text.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="py | torchscript | export")]
    = ExportFormat.PY,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file.")] = None,
    channels: Annotated[int, typer.Option(min=1, help="num_features for torchscript/export.")] = 64,
    layout: Annotated[Layout, typer.Option(help="nchw (images) or tokens (B, T, C).")] = Layout.NCHW,
) -> None:
    """Write a layer as a standalone .py, a TorchScript .pt or a torch.export .pt2."""
    from evonorm_search.domain import layer_name

    graph, name, eps = resolve_graph(layer)
    data = export_bytes(graph, fmt, num_features=channels, layout=layout.value, name=name, eps=eps)
    path = output or Path(f"{name or layer_name(graph)}{fmt.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    console.print(f"wrote {path} ({len(data):,} bytes): {formula(graph)}")


@app.command()
def evaluate(
    layer: Annotated[str, typer.Argument(help="Zoo name, graph JSON file, or graph JSON text.")],
    backbones: Annotated[str, typer.Option(help="Comma-separated: resnet,mobilenet,transformer")]
    = "resnet,mobilenet,transformer",
    steps: Annotated[int | None, typer.Option(min=1, help="Override training steps per task.")] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    no_rejection: Annotated[bool, typer.Option("--no-rejection", help="Skip the stability and quality stages.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads (more than 1 rarely helps these "
                                                     "small models and is much slower on a loaded machine).")]
    = 1,
) -> None:
    """Run the rejection protocols and the proxy training on each backbone, print the scores."""
    from dataclasses import asdict, replace

    import torch

    from workers.evaluation import DEFAULT_TASKS, EvalSpec, with_steps
    from workers.evaluation import evaluate as run_evaluation

    graph, _, eps = resolve_graph(layer)
    wanted = [b.strip() for b in backbones.split(",") if b.strip()]
    known = {t.backbone: t for t in DEFAULT_TASKS}
    unknown = [b for b in wanted if b not in known]
    if unknown or not wanted:
        raise fail(f"--backbones: unknown {unknown or wanted}; choose from {', '.join(known)}")
    spec = EvalSpec(tasks=tuple(known[b] for b in wanted), seed=seed, eps=eps)
    if no_rejection:
        spec = replace(spec, stability=False, quality=False)
    if steps is not None:
        spec = with_steps(spec, steps)
    torch.set_num_threads(threads)
    with console.status(f"evaluating {formula(graph)} on {', '.join(spec.objectives)} ..."):
        result = run_evaluation(graph, spec)
    if as_json:
        print(json.dumps(asdict(result), indent=2, default=str))
        return
    console.print(f"[bold]{formula(graph)}[/]  status: [bold]{result.status}[/]")
    if result.rejection:
        console.print(f"rejected at [bold]{result.rejection.stage}[/]: {result.rejection.reason}")
    table = Table("objective", "val accuracy", "val loss", "steps", "steps/s", "wall s", "params")
    for s in result.scores:
        table.add_row(s.objective, f"{s.accuracy:.4f}", f"{s.loss:.4f}", str(s.steps), f"{s.steps_per_s:.1f}",
                      f"{s.wall_s:.1f}", f"{s.params:,}")
    if result.scores:
        console.print(table)
    console.print("stage costs: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds))


# -- searches ------------------------------------------------------------------


def _open_store(db: str | None, *, create: bool = True) -> Any:
    """The store at --db (default: settings). A missing SQLite file is created only with `create`.

    Read-only commands pass create=False: a mistyped path is then an error, not a new, empty database.
    """
    from db import StoreError, open_store
    from evonorm_search.settings import get_settings

    url = db or get_settings().db_url
    try:
        return open_store(url, create=create)
    except FileNotFoundError as e:
        raise fail(f"the database {e} does not exist (give the SQLite file a search was run with, "
                   f"via --db or EVONORM_DB_URL)") from None
    except ValueError as e:  # an unsupported URL, in-memory SQLite
        raise fail(f"--db: {e}") from None
    except StoreError as e:  # an unreachable server, a refused login
        raise fail(f"--db: cannot open the database at {_safe_url(url)}: {_first_line(e)}", code=1) from None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return escape(lines[0] if lines else type(e).__name__)


def _safe_url(url: str) -> str:
    """The URL without its password, for an error message."""
    return escape(re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url))


def _load_search_config(config: Path | None, preset: str | None, overrides: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from evonorm_search.config import load_config

    data: dict[str, Any] = {}
    if config is not None:
        try:
            text = config.read_text()
        except OSError as e:
            raise fail(f"--config: cannot read {config}: {e.strerror}") from None
        try:
            data = json.loads(text) if config.suffix == ".json" else _yaml(text)
        except ValueError as e:
            raise fail(f"--config: {config} is not valid {config.suffix or 'JSON'}: {e}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return load_config(preset, data)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(config)'}: {err['msg']}" for err in e.errors()]
        raise fail("invalid search config:\n" + "\n".join(lines)) from None
    except ValueError as e:
        raise fail(str(e)) from None


def _yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with ray
        raise ValueError("PyYAML is not installed; use a .json config") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:  # not a ValueError
        raise ValueError(str(e)) from None


def _executor(kind: str | None, ray_address: str | None, config: Any) -> Any:
    from evonorm_search.config import search_executor
    from evonorm_search.settings import get_settings

    settings = get_settings()
    return search_executor(config, kind or settings.executor, ray_address or settings.ray_address)


def _start_executor(kind: str | None, ray_address: str | None, config: Any) -> Any:
    """The executor, started, or a one-line error naming the option."""
    from evonorm_search.settings import get_settings

    kind = kind or get_settings().executor
    if kind not in ("ray", "inprocess"):
        raise fail(f"--executor: unknown executor {kind!r}; choose ray or inprocess")
    address = ray_address or get_settings().ray_address
    where = f"the Ray cluster at {address!r}" if address else "a local Ray"
    if kind == "ray" and address:
        problem = _unreachable(address)
        if problem:  # ray.init would retry for minutes before it says so
            raise fail(f"--ray-address: cannot reach {where}: {problem}", code=1)
    try:
        return _executor(kind, ray_address, config)
    except Exception as e:  # Ray's errors for an unreachable or refused cluster have no common base
        raise fail(f"--ray-address: cannot start {where}: {_first_line(e)}", code=1) from None


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why a TCP connection to a Ray address ("host:port", "ray://host:port") fails, or None."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():  # "auto", "local": Ray finds the cluster itself
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        return escape(e.strerror or str(e) or type(e).__name__)
    return None


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="Search config, JSON or YAML.")] = None,
    preset: Annotated[str | None, typer.Option(help="quick | cluster | small_batch")] = None,
    budget: Annotated[int | None, typer.Option(min=1, help="Candidates to generate.")] = None,
    strategy: Annotated[str | None, typer.Option(help="evolution | random")] = None,
    seed: Annotated[int | None, typer.Option(help="Search seed.")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL or SQLite path (default: settings).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster.")] = None,
    executor: Annotated[str | None, typer.Option(help="ray | inprocess")] = None,
    resume: Annotated[int | None, typer.Option(help="Resume this search id instead of starting one.")] = None,
    export_dir: Annotated[Path | None, typer.Option(help="Where the front's layers are exported.")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
) -> None:
    """Run a search (the main job): progress while it runs, then the Pareto front and exported winners."""
    from db import LeaseError
    from evonorm_search.lease import STALE_S
    from evonorm_search.outage import run_through_outages
    from evonorm_search.runner import SearchRunner

    if resume is not None:
        from db import NotFoundError
        from evonorm_search.domain import search_config

        store = _open_store(db, create=False)  # resuming needs the database the search is in
        try:
            search = store.get_search(resume)
        except NotFoundError:
            raise fail(f"--resume: no search {resume}") from None
        cfg = search_config(search)
    else:  # a bad config is refused before any database is touched
        cfg = _load_search_config(config, preset, {"budget": budget, "strategy": strategy, "seed": seed})
        store = _open_store(db)
    # The executor starts before the search is created: a start that fails leaves no queued search
    # behind (which `serve` would later pick up).
    ex = _start_executor(executor, ray_address, cfg)
    if resume is None:
        search = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed)
    console.print(f"search [bold]{search.id}[/] ({cfg.strategy}, budget {cfg.budget}, "
                  f"objectives {', '.join(cfg.objectives)}) in {store.url}")
    try:
        with ex, _progress(cfg.budget) as (_bar, update):
            # A database outage, however long, makes the search wait and then carry on; never fail.
            runner_store = store.with_reconnect(60.0)
            result = run_through_outages(
                lambda: SearchRunner(runner_store, search.id, ex, on_progress=update), runner_store, search.id,
                on_wait=lambda msg: err.print(f"search {search.id}: {msg}"))
    except KeyboardInterrupt:
        # The runner left the search resumable: its in-flight candidates return to pending on resume.
        again = f"evonorm-search run --resume {search.id}" + (f" --db {shlex.quote(db)}" if db else "")
        err.print(f"search {search.id} interrupted; continue it with: {escape(again)}")
        raise typer.Exit(130) from None
    except LeaseError as e:
        raise fail(f"{e}: a search has one runner at a time (pause it there first; a runner that died "
                   f"without a trace on another host gives it up after {STALE_S:.0f}s)") from None
    console.print(f"search {result.id}: [bold]{result.status}[/], {result.num_evaluated} evaluated, "
                  f"{result.num_rejected} rejected of {result.num_candidates}")
    _print_front(store, result.id)
    from evonorm_search.settings import get_settings
    from evonorm_search.summary import export_winners, winners_dir

    out = export_dir or winners_dir(get_settings().export_dir or Path("runs"), result.id)
    paths = export_winners(store, result.id, out)
    if paths:
        console.print(f"exported {len(paths)} winners to {out}/")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(_summary(store, result.id), indent=2, default=str))
        console.print(f"summary: {summary_json}")


class _progress:
    """The progress bar, fitted to 80 columns: bar, count, time and best on one line, what is in flight
    on the next, and each rejection printed above them as it comes."""

    def __init__(self, budget: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        self.bar = _ActivityProgress(TextColumn("[bold]search"), BarColumn(bar_width=16), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
                                     transient=False)
        self.task = self.bar.add_task("search", total=budget, info="")

    def __enter__(self) -> tuple[Any, Any]:
        self.bar.__enter__()
        return self.bar, self.update

    def __exit__(self, *exc: object) -> None:
        self.bar.activity = ""
        self.bar.__exit__(None, None, None)

    def update(self, p: Any) -> None:
        for c in p.just_finished:
            if c.status == "rejected" and c.reused_from is None:
                reason = (c.rejection_reason or "").splitlines()[0] if c.rejection_reason else ""
                self.bar.console.print(escape(f"  #{c.id} rejected at {c.rejection_stage}: {reason}"),
                                       overflow="ellipsis", no_wrap=True, crop=True)
        self.bar.activity = escape(_activity(p))
        best = "/".join(f"{v:.3f}" for v in p.best) if p.best else "-"
        self.bar.update(self.task, completed=p.finished, total=p.budget, info=escape(f"best {best}"))


def _activity(p: Any) -> str:
    """The second progress line: the candidates in flight and what they are doing, then the counts."""
    doing = {"screen": "screening"}   # a training job is "rung <n>"
    now = ", ".join(f"#{cid} {doing.get(kind, kind)}" for cid, kind in p.running[:3])
    if len(p.running) > 3:
        now += f" +{len(p.running) - 3}"
    stages = " ".join(f"{k} {v}" for k, v in sorted(p.by_stage.items()))
    counts = f"ok {p.evaluated}  rejected {p.rejected}" + (f" ({stages})" if stages else "")
    if p.duplicates:
        counts += f"  dup {p.duplicates}"
    return f"  now: {now or '-'} | {counts}"


class _ActivityProgress(Progress):
    """A Progress with one more line under the bar; cut to the terminal's width, never wrapped."""

    activity = ""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        if self.activity:
            line = Text.from_markup(self.activity, overflow="ellipsis")
            line.no_wrap = True
            yield line


def _estimate_text(e: dict[str, Any]) -> str:
    """0.9123 ± 0.0040 (3): the mean, its standard error and n."""
    se = f" ± {e['stderr']:.4f}" if e.get("stderr") is not None else ""
    return f"{e['mean']:.4f}{se} ({e['n']})"


def _print_front(store: Any, search_id: int) -> None:
    from evonorm_search.domain import CandidateView
    from evonorm_search.summary import evaluated, front_report

    report = front_report(store, search_id)
    names = report["objectives"]
    what = "mean ± standard error (seeds) per task at each layer's highest rung"
    if "cost" in names:
        what += "; cost: fwd+bwd time relative to BN-ReLU, lower is better"
    table = Table(title=f"Pareto front of search {search_id} ({what})")
    table.add_column("id")
    table.add_column("formula")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("rung")           # "2 ✓": finished the top rung (verified); else provisional
    wins = {m["id"]: ", ".join(f"{x['baseline']} on {x['objective']} (p {x['p']:.3f})"
                               for x in m["comparisons"] if x["beats"]) for m in report["members"]}
    if any(wins.values()):
        table.add_column("beats (paired, p < 0.05)")
    table.add_column("origin")
    by_id = {c.id: c for c in evaluated(store, search_id)}
    on_front = {m["id"] for m in report["members"]}
    for m in report["members"]:
        zoo = CandidateView(by_id[m["id"]]).zoo_name if m["id"] in by_id else None
        shown = f"zoo {zoo}: {m['formula']}" if zoo else m["formula"]
        rung = f"{m['rung']} ✓" if m["verified"] else str(m["rung"])
        table.add_row(str(m["id"]), escape(shown), *(_estimate_text(e) for e in m["estimates"]), rung,
                      *([wins[m["id"]] or "-"] if any(wins.values()) else []),
                      escape(origin_text(m["id"], by_id)))
    for b in report["baselines"]:
        if b["id"] in on_front:  # a seed on the front is its own baseline: one row, its origin says so
            continue
        scores = [_estimate_text(e) for e in b["estimates"]] if b["estimates"] else \
            [f"rejected: {b['rejection_stage']}"] + [""] * (len(names) - 1)
        table.add_row(f"[dim]{b['id']}[/]", f"[dim]zoo {b['name']}[/]", *scores, f"[dim]{b['rung']}[/]",
                      *([""] if any(wins.values()) else []), "[dim]baseline[/]")
    console.print(table)
    verified = [m["id"] for m in report["verified_members"]]
    console.print(f"rung ✓: verified (the top rung, held-out tasks included); verified front: "
                  f"{verified or 'none yet'}")


def origin_text(candidate_id: int, by_id: dict[int, Any]) -> str:
    """Where a candidate came from, in the README's words: "zoo seed bn_relu", "random graph", or
    "mutation of #7 (from bn_relu, 2 mutations): <what changed>", following parents to the lineage's root."""
    c = by_id.get(candidate_id)
    origin = (c.mutation or "") if c is not None else ""
    if origin.startswith("seed:"):
        return f"zoo seed {origin.split(':', 1)[1]}, its own baseline"
    if origin.startswith("baseline:"):
        return f"zoo {origin.split(':', 1)[1]}, the search's baseline (never bred from)"
    if c is None or not c.parent_ids:
        return "random graph"
    steps, root, node = 0, "a random graph", c
    while node is not None and node.parent_ids:
        steps += 1
        node = by_id.get(node.parent_ids[0])
    if node is not None and (node.mutation or "").startswith("seed:"):
        root = (node.mutation or "").split(":", 1)[1]
    elif node is None:
        root = "an earlier candidate"
    plural = "s" if steps != 1 else ""
    return f"mutation of #{c.parent_ids[0]} (from {root}, {steps} mutation{plural}): {origin}"


def _summary(store: Any, search_id: int) -> dict[str, Any]:
    from evonorm_search.domain import search_config
    from evonorm_search.summary import evaluated, front_report, hypervolume_history

    search = store.get_search(search_id)
    cfg = search_config(search)
    maximise = cfg.maximise
    rows = evaluated(store, search_id)
    report = front_report(store, search_id)
    return {
        "search_id": search.id, "status": search.status, "objectives": cfg.objectives,
        "candidates": search.num_candidates, "evaluated": search.num_evaluated, "rejected": search.num_rejected,
        "core_hours": round(search.core_s / 3600, 4),
        "by_status": {str(k): v for k, v in store.count_by_status(search_id).items()},
        "rejected_by_stage": store.count_by_rejection_stage(search_id),
        "front": report["members"],
        "verified_front": report["verified_members"],
        "baselines": {b["name"]: b for b in report["baselines"]},
        "test": f"{report['test']}, beats at p < {report['alpha']}",
        "hypervolume_history": hypervolume_history(rows, maximise),
    }


@app.command()
def status(search_id: int, db: Annotated[str | None, typer.Option(help="Database URL.")] = None) -> None:
    """A search's status and counts."""
    store = _open_store(db, create=False)
    from db import NotFoundError

    try:
        summary = _summary(store, search_id)
    except NotFoundError:
        raise fail(f"no search {search_id}") from None
    for key in ("front", "verified_front", "hypervolume_history"):
        summary.pop(key)
    console.print_json(json.dumps(summary, default=str))


@app.command()
def front(search_id: int, db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the front as JSON.")] = False) -> None:
    """Print a search's Pareto front (estimates with n, rung, verified) beside its baselines."""
    from db import NotFoundError
    from evonorm_search.summary import front_report

    try:
        store = _open_store(db, create=False)
        if as_json:
            console.print_json(json.dumps(front_report(store, search_id), default=str))
        else:
            _print_front(store, search_id)
    except NotFoundError:
        raise fail(f"no search {search_id}") from None


@app.command("export-winners")
def export_winners(
    search_id: int,
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory.")] = Path("winners"),
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    layout: Annotated[Layout | None, typer.Option(help="nchw (images, <name>.py) or tokens (B, T, C; "
                                                       "<name>_tokens.py); default: each one the search used")]
    = None,
) -> None:
    """Export every layer on a search's Pareto front as a standalone .py module, per input layout."""
    from db import NotFoundError

    try:
        from evonorm_search.summary import export_winners

        paths = export_winners(_open_store(db, create=False), search_id, output,
                               [layout.value] if layout else None)
    except NotFoundError:
        raise fail(f"no search {search_id}") from None
    for p in paths:
        console.print(str(p))


def _floats(option: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise fail(f"{option}: expected at least one number")
    return values


@app.command()
def rerank(
    search_id: int,
    top: Annotated[int, typer.Option("--top", min=0, help="Front members to retrain (best mean accuracy).")],
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps per trial (default: the search's "
                                                          "steps x --steps-mult).")] = None,
    steps_mult: Annotated[float, typer.Option(min=0.001, help="Longer budget: the search's steps times this.")]
    = 4.0,
    lrs: Annotated[str | None, typer.Option(help="Learning rates, e.g. 0.05,0.1,0.2 (default: each task's "
                                                 "recipe lr x 0.5, 1, 2).")] = None,
    seeds: Annotated[str, typer.Option(help="Training seeds, e.g. 0,1,2.")] = "0,1",
    evals: Annotated[int, typer.Option(min=1, help="Validation reports per trial (ASHA's rungs).")] = 5,
    baselines: Annotated[str | None, typer.Option(help="Zoo layers retrained beside the front, e.g. "
                                                       "bn_relu,layernorm (default: bn_relu, gn_relu, "
                                                       "layernorm, evonorm_b0, evonorm_s0).")] = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.01, help="CPUs reserved per trial.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0, help="GPUs reserved per trial.")] = 0.0,
    db: Annotated[str | None, typer.Option(help="Database URL or SQLite path (default: settings).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (default: a local Ray).")]
    = None,
) -> None:
    """Retrain the front's best layers and the zoo baselines longer, with an lr sweep (Ray Tune + ASHA).

    Each trial is recorded as it ends. SIGINT or SIGTERM stops the run (exit 130 / 143) with what it
    finished kept; the same command again runs only the trials not yet recorded.
    """
    import signal

    from db import NotFoundError
    from evonorm_search.rerank import (
        BASELINES,
        ConsoleProgress,
        RerankInterrupted,
        RerankSettings,
        StopSignals,
        rerank_table,
        run_rerank,
    )

    parsed_lrs = _floats("--lrs", lrs)
    parsed_seeds = _floats("--seeds", seeds) or ()
    if any(s != int(s) or s < 0 for s in parsed_seeds):
        raise fail(f"--seeds: expected non-negative integers, got {seeds!r}")
    zoo = BASELINES if baselines is None else tuple(n.strip() for n in baselines.split(",") if n.strip())
    try:
        settings = RerankSettings(top_k=top, steps=steps, steps_mult=steps_mult, lrs=parsed_lrs,
                                  seeds=tuple(int(s) for s in parsed_seeds), evals=evals,
                                  cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, baselines=zoo)
    except ValueError as e:
        raise fail(str(e)) from None
    store = _open_store(db, create=False)
    try:
        store.get_search(search_id)
    except NotFoundError:
        raise fail(f"no search {search_id}") from None
    stop = StopSignals()

    def stopped(detail: str) -> typer.Exit:
        signum = stop.signum or signal.SIGINT
        err.print(f"rerank stopped by {signal.Signals(signum).name}: {detail}; run the same command again to "
                  "resume", soft_wrap=True)
        return typer.Exit(128 + signum)

    try:
        with stop, ConsoleProgress(console) as progress:
            records = run_rerank(store, search_id, settings, ray_address=ray_address, progress=progress,
                                 stop=stop)
    except RerankInterrupted as e:
        raise stopped(f"{e.recorded} of {e.total} trials recorded ({e.this_run} in this run)") from None
    except KeyboardInterrupt:   # a second signal: stopped at once
        raise stopped("the trials it finished are recorded") from None
    console.print(rerank_table(records))
    console.print(f"{len(records)} rows recorded for search {search_id} in {store.url}")


def main() -> None:  # pragma: no cover
    app()
