"""Alembic migrations of the heroes schema."""
