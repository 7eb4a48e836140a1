"""The exceptions admmsearch raises: one root, a few kinds, messages that say what to fix; and
:func:`quote`, how every message shows a value the user gave."""

from __future__ import annotations

import reprlib

__all__ = [
    "AdmmSearchError",
    "AdmmSearchWarning",
    "ConfigError",
    "ConstraintError",
    "DatasetError",
    "DivergenceError",
    "ExportError",
    "LayerError",
    "NoTrialError",
    "PackError",
    "QUOTE_LIMIT",
    "RegistryError",
    "StoreError",
    "StudyNotFoundError",
    "TrackingError",
    "UIError",
    "UserCodeError",
    "quote",
]

#: The longest a quoted value gets in a message, in characters.
QUOTE_LIMIT = 80
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters, read without walking all
    of a huge value (a long list shows its first items; :mod:`reprlib`).

    >>> quote("accuracy"), quote(list(range(100)))
    ("'accuracy'", '[0, 1, 2, 3, 4, 5, ...]')
    >>> len(quote("x" * 10_000)) <= QUOTE_LIMIT
    True
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AdmmSearchError(Exception):
    """Root of every error admmsearch raises on purpose. The command line, not the error,
    decides its exit status (2 for bad input, 1 for a study that fails once running)."""


class AdmmSearchWarning(UserWarning):
    """Root of the warnings admmsearch gives: something was skipped or redone, work goes on.
    The CLI shows each as one ``warning: ...`` line."""


class ConfigError(AdmmSearchError, ValueError):
    """A setting is missing, of the wrong type or out of range; the message names the field."""


class ConstraintError(AdmmSearchError, ValueError):
    """A constraint set cannot be built or applied (keep ratio, bits, clusters, empty layer)."""


class LayerError(AdmmSearchError, KeyError):
    """A layer name or pattern matches no compressible layer; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class RegistryError(AdmmSearchError, KeyError):
    """An unknown name was asked of a registry; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UserCodeError(AdmmSearchError):
    """A model or dataset function named in a study (``module:function`` or
    ``path/file.py:function``) is not callable, raised, or returned the wrong type; the message
    names the field, the import path and the function's own message."""


class DatasetError(AdmmSearchError):
    """A dataset is missing or malformed; the message says how to get or fix it."""


class DivergenceError(AdmmSearchError):
    """Training produced a non-finite loss or collapsed; the message gives the stage and reason."""


class PackError(AdmmSearchError):
    """A packed model file is malformed or does not fit the model it is loaded into."""


class ExportError(AdmmSearchError):
    """A packed model cannot be exported to a device format (a layer or network the exporter
    cannot express, or an output that cannot be written); the message names the file."""


class StoreError(AdmmSearchError):
    """The Optuna storage or the MLflow tracking store cannot be opened or is not supported;
    the message names it, with any password masked."""


class TrackingError(StoreError):
    """An MLflow call failed: the server is unreachable (``unreachable``) or refused a request;
    the message names the tracking URI, with any password masked."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class UIError(AdmmSearchError):
    """A browser UI cannot start or stopped: a port is taken, a server exited or did not answer;
    the message names the UI and its log."""


class StudyNotFoundError(AdmmSearchError, LookupError):
    """No study of that name in the storage."""


class NoTrialError(AdmmSearchError, LookupError):
    """No finished trial of a study meets what was asked for (a trial number or a policy)."""
