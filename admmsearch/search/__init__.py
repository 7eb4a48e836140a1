"""The search: a study's space, samplers, seeded and prior trials, the objective that runs one
trial, the study runner, and reading finished studies back (front, catalog, export)."""

from __future__ import annotations

__all__: list[str] = []
