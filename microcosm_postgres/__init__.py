"""Opinionated persistence with PostgreSQL for microcosm services."""

__version__ = "4.0.0"

__all__ = ["__version__"]
