"""The `evonorm-search` command line."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
    graph, name, eps = resolve_graph(layer)
    data = export_bytes(graph, fmt, num_features=channels, layout=layout.value, name=name, eps=eps)
    path = output or Path(f"{name or 'layer_' + structural_hash(graph)[:8]}{fmt.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    console.print(f"wrote {path} ({len(data):,} bytes): {formula(graph)}")


def main() -> None:  # pragma: no cover
    app()
