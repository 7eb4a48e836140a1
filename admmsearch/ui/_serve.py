"""Serve a study's stores in the browser: the MLflow UI and, where installed, the Optuna dashboard.

Each UI runs as a child process in a session of its own, so that stopping it also stops what
it spawned (``mlflow server`` runs uvicorn under it). :func:`serve_ui` waits until every UI
answers HTTP, prints one line per UI, then blocks until Ctrl-C (or SIGTERM, SIGHUP) or until a
UI stops, and always stops the children on the way out. Their output goes to log files in a
temporary folder, named in any error and removed after a clean stop.

Choices made for a personal UI on this machine:

* MLflow serves with one worker and without its GenAI job runner
  (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` unless set), which a study does not use.
* No store URL is ever on a child's command line, which every local user can read (``ps``):
  MLflow gets its store through ``MLFLOW_BACKEND_STORE_URI``, the dashboard its storage through
  ``ADMMSEARCH_DASHBOARD_STORAGE`` (read by :mod:`admmsearch.ui._dashboard`, our entry point to
  optuna-dashboard's server); a process's environment is readable only by its own user.
* The experiments of an embedded SQLite store have explicit artifact locations beside the
  database, which the server reads directly; ``--default-artifact-root`` puts the artifacts of
  experiments created in the UI there too.
* MLflow answers only requests whose ``Host`` is local or a private address. Bound to a named
  interface, that name is allowed as well; bound to every interface (``0.0.0.0``), set
  ``MLFLOW_SERVER_ALLOWED_HOSTS`` to the names browsers will use.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UIError
from ..redact import redact_text, redact_url
from ..tracking import artifact_root
from ._dashboard import STORAGE_ENV

__all__ = ["READY_TIMEOUT_S", "serve_ui"]

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.5
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_EVERY_INTERFACE = {"", "0.0.0.0", "::"}


@dataclass(frozen=True)
class _Spec:
    """A UI to start: its name, command line, extra environment and where it listens."""

    name: str
    command: list[str]
    host: str
    port: int
    option: str  # the command-line option that chooses the port, for error messages
    store: str  # the store it serves: its password is masked in anything shown
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Child:
    """A started UI: its process, its address and its log file."""

    spec: _Spec
    process: subprocess.Popen
    url: str
    log: Path


def serve_ui(
    tracking_uri: str,
    storage: str | None,
    *,
    host: str,
    port: int,
    dashboard_port: int,
    echo: Callable[[str], None],
) -> None:
    """Start the MLflow UI on ``tracking_uri`` and the Optuna dashboard on ``storage``; block.

    Args:
        tracking_uri: MLflow tracking URI. An ``http(s)://`` URI is a server already: its address
            is shown and no MLflow UI is started.
        storage: Optuna storage URL, or None for no dashboard. The dashboard starts only where
            ``optuna-dashboard`` is installed (``pip install 'admmsearch[ui]'``).
        host: Interface both UIs bind to; 127.0.0.1 keeps them on this machine.
        port: Port of the MLflow UI.
        dashboard_port: Port of the Optuna dashboard.
        echo: Where the one line per UI (name and URL) goes.

    Returns after Ctrl-C or SIGTERM, once the UIs have stopped.

    Raises:
        UIError: A port is taken, a UI exited or did not answer within ``READY_TIMEOUT_S``
            seconds, or a UI stopped while serving. The message names the UI and its log.
    """
    specs = _mlflow_specs(tracking_uri, host, port, echo) + _dashboard_specs(
        storage, host, dashboard_port, echo
    )
    if not specs:
        return
    _check_ports(specs)
    logs = Path(tempfile.mkdtemp(prefix="admmsearch-ui-"))
    children: list[_Child] = []
    try:
        with _signals_interrupt():
            for spec in specs:
                children.append(_start(spec, logs))
            for child in children:
                _wait_ready(child)
                echo(f"{child.spec.name}: {child.url}  ({redact_url(child.spec.store)})")
            echo("Press Ctrl-C to stop.")
            _watch(children)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)
    shutil.rmtree(logs, ignore_errors=True)


def _mlflow_specs(
    tracking_uri: str, host: str, port: int, echo: Callable[[str], None]
) -> list[_Spec]:
    """The MLflow UI to start on the tracking store; none for a tracking server."""
    if tracking_uri.startswith(("http://", "https://")):
        echo(f"MLflow UI: {redact_url(tracking_uri)}  (a tracking server: nothing to start)")
        return []
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    root = artifact_root(tracking_uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    command += _allowed_hosts(host)
    env = {
        "MLFLOW_BACKEND_STORE_URI": tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        ),
    }
    return [_Spec("MLflow UI", command, host, port, "--port", tracking_uri, env)]


def _allowed_hosts(host: str) -> list[str]:
    """MLflow's ``--allowed-hosts`` for a named interface; none where its default serves (local
    and private addresses) or ``MLFLOW_SERVER_ALLOWED_HOSTS`` says."""
    if host in _LOOPBACK | _EVERY_INTERFACE or "MLFLOW_SERVER_ALLOWED_HOSTS" in os.environ:
        return []
    return ["--allowed-hosts", f"{host},{host}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"]


def _dashboard_specs(
    storage: str | None, host: str, port: int, echo: Callable[[str], None]
) -> list[_Spec]:
    """The Optuna dashboard to start on the storage; none if not asked for or not installed."""
    if storage is None:
        return []
    if importlib.util.find_spec("optuna_dashboard") is None:
        echo("Optuna dashboard: not installed (pip install 'admmsearch[ui]')")
        return []
    command = [
        sys.executable,
        "-m",
        "admmsearch.ui._dashboard",
        "--host",
        host,
        "--port",
        str(port),
    ]
    env = {STORAGE_ENV: storage}
    return [_Spec("Optuna dashboard", command, host, port, "--dashboard-port", storage, env)]


def _check_ports(specs: list[_Spec]) -> None:
    """Fail before starting anything when two UIs share a port or a port is taken."""
    if len({spec.port for spec in specs}) < len(specs):
        raise UIError(
            f"the {specs[0].name} and the {specs[1].name} cannot share port "
            f"{specs[0].port}; choose another with {specs[1].option}"
        )
    for spec in specs:
        _check_port(spec)


def _check_port(spec: _Spec) -> None:
    """Bind the UI's address once, as its server will, to tell a taken port from a free one."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            spec.host, spec.port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise UIError(f"host {spec.host!r}: {exc.strerror}") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UIError(
                    f"{spec.name}: port {spec.port} on {spec.host} is already in use; "
                    f"choose another with {spec.option}"
                ) from None
            raise UIError(
                f"{spec.name}: cannot listen on {spec.host} port {spec.port}: {exc.strerror}"
            ) from None


def _start(spec: _Spec, logs: Path) -> _Child:
    """Start one UI in a session of its own, its output going to a log file."""
    log = logs / (spec.name.lower().replace(" ", "-") + ".log")
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                spec.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **spec.env},
                start_new_session=True,
            )
    except OSError as exc:
        raise UIError(f"{spec.name}: cannot run {spec.command[0]}: {exc.strerror}") from None
    return _Child(spec, process, _url(spec.host, spec.port), log)


def _url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server bound to ``host``."""
    if host in _EVERY_INTERFACE:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _wait_ready(child: _Child, timeout: float = READY_TIMEOUT_S) -> None:
    """Return once the UI answers HTTP; fail if it exits first or does not answer in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_running(child, "exited before answering")
        if _answers(child.url):
            return
        time.sleep(_POLL_S)
    raise UIError(
        f"{child.spec.name} did not answer on {child.url} within {timeout:.0f} s; "
        f"see its log {child.log}"
    )


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status; proxies bypassed)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _watch(children: list[_Child]) -> None:
    """Block until one of the UIs stops (an error) or Ctrl-C interrupts."""
    while True:
        for child in children:
            _check_running(child, "stopped")
        time.sleep(_POLL_S)


def _check_running(child: _Child, what: str) -> None:
    """Raise, naming the UI, its last log line and its log, if its process has ended."""
    code = child.process.poll()
    if code is None:
        return
    last = redact_text(_last_line(child.log), child.spec.store)
    raise UIError(f"{child.spec.name} {what} (exit code {code}): {last}; full log: {child.log}")


def _last_line(log: Path) -> str:
    """The last non-empty line of a log file (shortened), or a note that it is empty."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    last = lines[-1].strip() if lines else "no output"
    return last if len(last) <= 300 else last[:297] + "..."


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP stop the UIs as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, interrupt) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: list[_Child]) -> None:
    """SIGTERM each UI's process group, wait for them, SIGKILL what is left after a while."""
    for child in children:
        _signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        while _group_alive(child.process) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(child.process, getattr(signal, "SIGKILL", signal.SIGTERM))
        child.process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process and everything in its session (POSIX) or to it alone."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(process: subprocess.Popen) -> bool:
    """Whether the process, or on POSIX anything in its process group, still runs."""
    if process.poll() is None:
        return True
    if not hasattr(os, "killpg"):
        return False
    try:
        os.killpg(process.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
