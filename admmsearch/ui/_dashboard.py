"""Start the Optuna dashboard on a storage URL taken from the environment, never from argv.

``admmsearch ui`` runs this module as its dashboard child::

    ADMMSEARCH_DASHBOARD_STORAGE=<storage URL> python -m admmsearch.ui._dashboard --host H --port P

The URL may carry a password. A process's command line is readable by every local user (``ps``);
its environment only by the same user, so the URL travels there, and is removed from this
process's ``os.environ`` once read. The server is optuna-dashboard's own ``run_server``.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["STORAGE_ENV", "main"]

#: The environment variable that carries the storage URL to the dashboard process.
STORAGE_ENV = "ADMMSEARCH_DASHBOARD_STORAGE"


def main(argv: list[str] | None = None) -> None:
    """Serve the dashboard until the process is stopped; exit 2 without a storage URL."""
    parser = argparse.ArgumentParser(prog="python -m admmsearch.ui._dashboard")
    parser.add_argument("--host", required=True, help="interface to bind")
    parser.add_argument("--port", required=True, type=int, help="port to listen on")
    args = parser.parse_args(argv)
    storage = os.environ.pop(STORAGE_ENV, "")
    if not storage:
        print(f"error: no storage URL in ${STORAGE_ENV}", file=sys.stderr)
        sys.exit(2)
    from optuna_dashboard import run_server

    run_server(storage, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
