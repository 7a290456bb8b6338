"""A user's own graph: validate it, or turn it into a module."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import Response

from api.deps import Authorized
from api.exports import export_response
from api.routes.searches import BAD_BODY, INVALID, UNAUTHORIZED
from api.schemas import GraphIn, GraphInfo, ModuleRequest
from primitives import Graph, GraphError, canonicalize, formula, structural_hash

router = APIRouter(tags=["graphs"])

_S0 = {"schema": "evonorm-graph/1", "nodes": [
    {"op": "mul", "inputs": ["v1", "x"]}, {"op": "sigmoid", "inputs": [4]}, {"op": "mul", "inputs": ["x", 5]},
    {"op": "std_group", "inputs": ["x"]}, {"op": "div", "inputs": [6, 7]}]}
_BAD = {"schema": "evonorm-graph/1", "nodes": [{"op": "sigmoid", "inputs": [4]}]}


class GraphFieldError(ValueError):
    """A GraphError re-raised with its location inside the request body."""

    def __init__(self, prefix: list[str | int], field: str, message: str) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.field = field
        self.message = message


def parse(graph: GraphIn, prefix: list[str | int]) -> Graph:
    try:
        return Graph.from_json(graph.to_json())
    except GraphError as e:
        raise GraphFieldError(prefix, e.field, e.message) from None


@router.post("/api/graphs/validate", response_model=GraphInfo, dependencies=[Authorized],
             responses={**BAD_BODY, **UNAUTHORIZED, **INVALID}, summary="Validate a graph")
def validate_graph(graph: Annotated[GraphIn, Body(openapi_examples={
        "evonorm_s0": {"summary": "EvoNorm-S0", "value": _S0},
        "bad": {"summary": "Reads a node that does not exist yet (422)", "value": _BAD}})]) -> GraphInfo:
    """200 with the formula and the canonical form, or 422 naming the bad field (`nodes[0].inputs[0]`)."""
    g = parse(graph, [])
    return GraphInfo(formula=formula(g), structural_hash=structural_hash(g), batch_dependent=g.batch_dependent,
                     live_ops=g.live_ops(), graph=g.to_json(), canonical=canonicalize(g).to_json())


MODULE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The layer as a file",
          "content": {"text/x-python": {"schema": {"type": "string"}},
                      "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **BAD_BODY, **UNAUTHORIZED, **INVALID}


@router.post("/api/graphs/module", response_class=Response, dependencies=[Authorized],
             responses=MODULE_RESPONSES, summary="Turn a graph into a module")
async def graph_module(request: Annotated[ModuleRequest, Body(openapi_examples={
        "swish_py": {"summary": "Swish as a .py", "value": {"graph": {"nodes": [
            {"op": "sigmoid", "inputs": ["x"]}, {"op": "mul", "inputs": ["x", 4]}]}, "format": "py",
            "name": "my_swish"}}})]) -> Response:
    """The graph as a standalone `.py`, a TorchScript `.pt` or a `torch.export` `.pt2` (422 on a bad graph)."""
    g = parse(request.graph, ["graph"])
    return await export_response(g, request.format, layout=request.layout, num_features=request.num_features,
                                 name=request.name, eps=request.eps)
