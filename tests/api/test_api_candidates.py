"""One candidate over REST: detail, lineage, evaluations, and its layer as a module to download."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient


def candidates(client: TestClient, sid: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/api/searches/{sid}/candidates",
                                             params={"limit": 500, **params}).json()["items"]
    return items


def test_detail_of_an_evaluated_child(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    child = next(c for c in candidates(client, sid, status="evaluated")
                 if c["parent_ids"] and c["reused_from"] is None and c["rung"] == 0)
    d = client.get(f"/api/candidates/{child['id']}").json()
    assert d["formula"] == child["formula"] and d["graph"]["schema"] == "evonorm-graph/1"
    assert d["objective_names"] == ["resnet:shapes32", "transformer:pydoc_chars"]
    # rung 0: one run per objective at the search's seed, at a third of the steps; the objectives are
    # the estimates' means over those runs
    assert [(e["objective"], e["rung"], e["seed"]) for e in d["evaluations"]] == [
        (n, 0, 0) for n in d["objective_names"]]
    assert [e["metrics"]["accuracy"] for e in d["evaluations"]] == pytest.approx(d["objectives"])
    assert [(e["objective"], e["mean"], e["n"], e["stderr"]) for e in d["estimates"]] == [
        (n, pytest.approx(v), 1, None) for n, v in zip(d["objective_names"], d["objectives"], strict=True)]
    assert d["verified"] is False
    assert d["evaluations_from"] == d["id"]
    # lineage: parent first, generations decreasing to 0
    assert d["lineage"][0]["id"] == child["parent_ids"][0]
    gens = [p["generation"] for p in d["lineage"]]
    assert gens == sorted(gens, reverse=True) and gens[-1] == 0 and gens[0] == d["generation"] - 1
    assert {b["name"] for b in d["baselines"]} == {"bn_relu", "evonorm_s0"}
    assert d["class_name"] == f"Candidate{d['id']}"


def test_detail_of_rejected_and_duplicate(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    rejected = candidates(client, sid, status="rejected")[0]
    d = client.get(f"/api/candidates/{rejected['id']}").json()
    assert d["rejection_stage"] and d["rejection_reason"] and d["evaluations"] == []
    dups = [c for c in candidates(client, sid, status="evaluated") if c["reused_from"]]
    if dups:
        d = client.get(f"/api/candidates/{dups[0]['id']}").json()
        assert d["evaluations_from"] == dups[0]["reused_from"] and d["evaluations"]


def test_seed_downloads_under_its_zoo_name(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    seed = candidates(client, sid)[1]
    assert seed["mutation"] == "seed:evonorm_s0"
    r = client.get(f"/api/candidates/{seed['id']}/module")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/x-python")
    assert r.headers["content-disposition"] == 'attachment; filename="evonorm_s0.py"'
    assert "class EvonormS0(nn.Module)" in r.text


def load_module(tmp_path: Path, name: str, source: bytes) -> Any:
    path = tmp_path / f"{name}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"dl_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout, shape", [("nchw", (2, 8, 5, 5)), ("tokens", (2, 7, 8))])
def test_py_module_imports_and_runs(finished: tuple[TestClient, int], tmp_path: Path, layout: str,
                                    shape: tuple[int, ...]) -> None:
    client, sid = finished
    best = client.get(f"/api/searches/{sid}/front").json()["members"][0]
    r = client.get(f"/api/candidates/{best['id']}/module", params={"layout": layout})
    assert r.status_code == 200
    module = load_module(tmp_path, f"c{best['id']}_{layout}", r.content)
    layer = getattr(module, f"Candidate{best['id']}")(8)
    y = layer(torch.randn(*shape))
    assert y.shape == shape and torch.isfinite(y).all()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_and_export_downloads(finished: tuple[TestClient, int]) -> None:
    client, sid = finished
    best = client.get(f"/api/searches/{sid}/front").json()["members"][0]
    ts = client.get(f"/api/candidates/{best['id']}/module", params={"format": "torchscript", "num_features": 8})
    assert ts.status_code == 200 and ts.headers["content-disposition"].endswith('.pt"')
    scripted = torch.jit.load(io.BytesIO(ts.content))
    assert scripted(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    ex = client.get(f"/api/candidates/{best['id']}/module", params={"format": "export", "num_features": 8})
    assert ex.status_code == 200 and ex.headers["content-disposition"].endswith('.pt2"')
    program = torch.export.load(io.BytesIO(ex.content))
    assert program.module()(torch.randn(3, 8, 6, 6)).shape == (3, 8, 6, 6)


def test_candidate_errors(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    assert client.get("/api/candidates/987654").status_code == 404
    assert client.get("/api/candidates/987654/module").status_code == 404
    assert client.get("/api/candidates/0").status_code == 422
    r = client.get("/api/candidates/1/module", params={"format": "onnx"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "format"
    r = client.get("/api/candidates/1/module", params={"num_features": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "num_features"
