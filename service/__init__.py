"""The consent record service: a self-hosted consent ledger."""

__version__ = "0.1.0"
