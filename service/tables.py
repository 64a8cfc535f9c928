"""Every table module, imported once so `Base.metadata` is complete (Alembic, tests)."""

from service.auth import tables as auth_tables
from service.consent_schema import tables as consent_schema_tables
from service.dsr import tables as dsr_tables
from service.ledger import tables as ledger_tables
from service.stats import tables as stats_tables

__all__ = ["auth_tables", "consent_schema_tables", "dsr_tables", "ledger_tables", "stats_tables"]
