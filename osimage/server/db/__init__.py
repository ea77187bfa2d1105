"""Metadata storage: tables, Alembic migrations and the queries on them (SQLAlchemy 2, async)."""
