"""`evonorm-search serve`: refuses to listen beyond loopback without a token."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from api.cli import app


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_serve_refuses_public_host_without_token(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVONORM_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", host])
    assert result.exit_code == 2
    assert "without a token" in result.output and "EVONORM_TOKEN" in result.output


def test_serve_rejects_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["serve", "--executor", "threads"])
    assert result.exit_code == 2 and "executor" in result.output


def test_serve_with_token_on_public_host_gets_past_the_check(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: object) -> None:
    import uvicorn

    calls: list[tuple[str, int]] = []
    monkeypatch.setenv("EVONORM_TOKEN", "t0ken")
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((host, port)))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8123", "--db",
                                      f"{tmp_path}/serve.db", "--executor", "inprocess"])
    assert result.exit_code == 0, result.output
    assert calls == [("0.0.0.0", 8123)] and "token required" in result.output
