"""Passwords out of everything admmsearch writes: logs, errors, MLflow, Optuna, exported files.

A storage URL or tracking URI may carry a password (``postgresql+psycopg://user:pw@host/db``).
Wherever such a URL is shown or stored it goes through :func:`redact_url` first, and error text
from a database driver or MLflow that might echo it goes through :func:`redact_text`::

    >>> redact_url("postgresql+psycopg://optuna:s3cret@db:5432/optuna")
    'postgresql+psycopg://optuna:***@db:5432/optuna'
    >>> redact_text("cannot connect to http://u:pw%21@host:5000/api", "http://u:pw%21@host:5000")
    'cannot connect to http://u:***@host:5000/api'

Better still, keep passwords out of URLs: ``PGPASSWORD`` or ``~/.pgpass`` for PostgreSQL,
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` for an MLflow server.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"
# scheme://user:PASSWORD@host... ; the password runs to the last "@" before the path, as in
# urllib, and the pattern needs no valid scheme, so a mistyped URL is masked too.
_PASSWORD = re.compile(r"(?P<head>://[^/:@\s]*:)(?P<password>[^/\s]*)@")


def _password(url: str) -> str | None:
    match = _PASSWORD.search(url)
    return match["password"] if match and match["password"] else None


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``; other URLs unchanged."""
    if _password(url) is None:
        return url
    return _PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", url, count=1)


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with the password of each of ``urls`` masked wherever it occurs, as written in
    the URL and percent-decoded (drivers echo either)."""
    for url in urls:
        password = _password(url) if url else None
        if password:
            for form in sorted({password, unquote(password)}, key=len, reverse=True):
                text = text.replace(form, MASK)
    return text
