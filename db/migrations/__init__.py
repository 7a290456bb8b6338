"""Alembic scripts for the db schema (a package so wheels ship them)."""
