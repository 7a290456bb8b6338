"""Health, metrics, the OpenAPI document and the dashboard's static files."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient


def test_healthz_and_metrics(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["database"] in ("sqlite", "postgresql")
    text = client.get("/metrics").text
    assert 'evonorm_searches{status="finished"}' in text
    assert 'evonorm_candidates_finished_total{status="evaluated"}' in text
    assert 'evonorm_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'evonorm_http_request_duration_seconds_bucket{le="0.05",method="GET",route="/healthz"}' in text
    finished_line = next(line for line in text.splitlines()
                         if line.startswith('evonorm_candidates_finished_total{status="evaluated"}'))
    assert float(finished_line.split()[1]) > 0


def test_openapi_is_complete(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    spec: dict[str, Any] = client.get("/openapi.json").json()
    expected = {
        ("post", "/api/searches"), ("get", "/api/searches"), ("get", "/api/searches/{search_id}"),
        ("post", "/api/searches/{search_id}/pause"), ("post", "/api/searches/{search_id}/resume"),
        ("post", "/api/searches/{search_id}/cancel"), ("get", "/api/searches/{search_id}/candidates"),
        ("get", "/api/searches/{search_id}/front"), ("get", "/api/candidates/{candidate_id}"),
        ("get", "/api/candidates/{candidate_id}/module"), ("post", "/api/graphs/validate"),
        ("post", "/api/graphs/module"), ("get", "/api/zoo"), ("get", "/api/events"), ("get", "/healthz"),
        ("get", "/metrics"), ("get", "/api/presets"),
    }
    found = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= found
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            if method == "post":   # 401 and bearer auth only on a server with a token (test_api_usability)
                assert "422" in op["responses"], f"{method} {path}"
            if "{search_id}" in path or "{candidate_id}" in path:
                assert "404" in op["responses"], f"{method} {path}"
    assert "409" in spec["paths"]["/api/searches/{search_id}/pause"]["post"]["responses"]
    launch = spec["paths"]["/api/searches"]["post"]["requestBody"]["content"]["application/json"]
    assert {"quick", "tiny"} <= set(launch["examples"])
    schemas = spec["components"]["schemas"]
    assert schemas["FrontPublic"].get("examples") and schemas["GraphIn"].get("examples")


def test_dashboard_is_served_offline(finished: tuple[TestClient, int]) -> None:
    client, _ = finished
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    # one script, the page's own: no plotting library (the plots are SVG), nothing from elsewhere
    assert re.findall(r'src="([^"]+)"', index.text) == ["/static/app.js"]
    assert "http" not in index.text.split("<body>")[1]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/nope.js").status_code == 404


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_pages_are_served_offline(finished: tuple[TestClient, int], page: str) -> None:
    client, _ = finished
    html = client.get(page)
    assert html.status_code == 200 and "/openapi.json" in html.text
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html.text) + \
        re.findall(r"url: '([^']+)'", html.text)
    assert assets, html.text
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from outside the app"
        if url.endswith((".js", ".css")):
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 10_000, url


def test_dashboard_assets_are_compressed_and_cacheable(finished: tuple[TestClient, int]) -> None:
    """The page's script and style go out gzip-compressed, compressed once per file version (not per
    request in the event loop), and revalidated by ETag (304, no body) so a new release shows at once."""
    from api.routes import dashboard

    client, _ = finished
    app = client.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert app.headers["content-encoding"] == "gzip" and app.headers["cache-control"] == "no-cache"
    assert app.num_bytes_downloaded < len(app.content) / 2 and "function drawPlot" in app.text
    assert app.headers["vary"] == "Accept-Encoding"
    gz = {"Accept-Encoding": "gzip"}
    misses = dashboard._gzip.cache_info().misses
    again = client.get("/static/app.js", headers=gz)
    assert again.content == app.content and dashboard._gzip.cache_info().misses == misses   # not again
    cached = client.get("/static/app.js", headers={**gz, "If-None-Match": app.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""
    plain = client.get("/static/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == app.content
    assert plain.headers["etag"] != app.headers["etag"]   # two representations
    assert client.get("/static/style.css", headers=gz).headers["content-encoding"] == "gzip"
    events = client.get("/api/events", params={"follow": "false"}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in events.headers, "event streams are not buffered for compression"
