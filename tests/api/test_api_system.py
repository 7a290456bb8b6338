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
    assert 'src="/static/vendor/plotly-basic-4.1.1.min.js"' in index.text
    assert "http" not in index.text.split("<body>")[1]
    js = client.get("/static/vendor/plotly-basic-4.1.1.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and "javascript" in js.headers["content-type"]
    full = client.get("/static/vendor/plotly.min.js")   # the plotly package's full bundle, still served
    assert full.status_code == 200 and len(full.content) > 4_000_000
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
    """The page's time to usable was mostly an uncompressed 4.8 MB plotly bundle: now plotly's basic
    bundle (the plots are scatters), gzip-compressed, kept by the browser for a year (its name has the
    version); the page's own script and style are revalidated (ETag) so a new release shows at once."""
    client, _ = finished
    js = client.get("/static/vendor/plotly-basic-4.1.1.min.js", headers={"Accept-Encoding": "gzip"})
    assert js.headers["content-encoding"] == "gzip"
    assert js.num_bytes_downloaded < 500_000 < len(js.content)
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    app = client.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert app.headers["content-encoding"] == "gzip" and app.headers["cache-control"] == "no-cache"
    again = client.get("/static/app.js", headers={"If-None-Match": app.headers["etag"]})
    assert again.status_code == 304
    events = client.get("/api/events", params={"follow": "false"}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in events.headers, "event streams are not buffered for compression"
