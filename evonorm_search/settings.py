"""One settings object for the CLI and the coordinator (environment: EVONORM_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVONORM_", env_file=".env", extra="ignore")

    db_url: str = Field("sqlite:///runs/evonorm.db", description="SQLAlchemy URL or a SQLite file path")
    ray_address: str | None = Field(None, description="Join this Ray cluster; default: start a local one")
    executor: str = Field("ray", pattern="^(ray|inprocess)$")
    export_dir: Path | None = Field(None, description=(
        "Every finished search's Pareto front is exported here as .py modules, in search-<id>/winners/ "
        "(unset: the coordinator exports nothing; `run` uses runs/)"))
    token: str | None = Field(None, description="Bearer token required by mutating API calls")
    data_dir: str | None = Field(None, description="Local CIFAR directory")
    max_running: int = Field(4, ge=0, le=1024, description="Searches run at once; the rest queue")
    reconnect_s: float = Field(60.0, ge=0, le=86_400,
                               description="A database outage runners wait out in place; a longer one stops "
                                           "them until the database is back (the search waits, never fails)")

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, v: str | None) -> str | None:
        # a blank token would protect nothing, yet counts as set (serve listens beyond loopback with it)
        if v is not None and (not v.strip() or v != v.strip()):
            raise ValueError("the token must not be blank nor start or end with whitespace")
        return v


def get_settings() -> Settings:
    return Settings()
