"""Every table module, imported once so `Base.metadata` is complete (Alembic, tests)."""

from service.auth import tables as auth_tables

__all__ = ["auth_tables"]
