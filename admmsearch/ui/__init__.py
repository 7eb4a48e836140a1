"""The browser views of a study's stores: the MLflow UI and the Optuna dashboard. The
implementation modules are private; this module names what is public."""

from __future__ import annotations

from ._serve import serve_ui

__all__ = ["serve_ui"]
