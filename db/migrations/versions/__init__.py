"""Migration revisions; alembic itself ignores this file."""
