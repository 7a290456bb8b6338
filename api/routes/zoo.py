"""The layer zoo: known normalization-activation layers and their graphs."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import ZooLayerPublic
from primitives import structural_hash
from primitives.zoo import ZOO

router = APIRouter(tags=["zoo"])


@router.get("/api/zoo", response_model=list[ZooLayerPublic], summary="The layer zoo")
def zoo() -> list[ZooLayerPublic]:
    """Every zoo layer with its formula; layers outside the search space have no graph."""
    return [ZooLayerPublic(name=z.name, class_name=z.class_name, title=z.title, source=z.source,
                           formula=z.formula, in_search_space=z.in_search_space,
                           batch_dependent=z.batch_dependent, eps=z.eps,
                           graph=z.graph.to_json() if z.graph else None,
                           structural_hash=structural_hash(z.graph) if z.graph else None)
            for z in ZOO.values()]
