"""`admmsearch ui` on a real study's stores: the MLflow UI in headless Chromium, the dashboard.

The browser test needs the Debian packages chromium and chromium-driver (.ci/run installs
them); without them it fails, it does not skip. Screenshots go to test-artifacts/ at the repository
root, or to $ADMMSEARCH_TEST_ARTIFACTS.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from admmsearch.config import load_study, resolve_layers
from admmsearch.errors import UIError
from admmsearch.search.study import prepare, run_study
from admmsearch.tracking import search_runs
from admmsearch.ui._serve import _mlflow_specs, serve_ui

ROOT = Path(__file__).resolve().parents[1]
ADMMSEARCH = Path(sys.executable).with_name("admmsearch")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT_S = 60
HAS_DASHBOARD = importlib.util.find_spec("optuna_dashboard") is not None
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Tracked:
    """A finished study: its stores, its MLflow experiment, parent run and trial runs."""

    name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run: str
    trial_runs: dict[str, str]  # run name -> run id


def run_tiny_study(path: Path) -> Tracked:
    """Run the (tiny) study file at ``path`` into SQLite stores beside it."""
    tmp_path = path.parent
    config = load_study(path)
    (tmp_path / "mlruns").mkdir()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    ctx = prepare(
        config,
        resolve_layers(config),
        storage=storage,
        tracking_uri=tracking,
        workdir=tmp_path / "work",
    )
    run_study(ctx)
    runs = search_runs(tracking, config.name)
    trials = runs[runs["tags.admmsearch.role"] == "trial"]
    names = dict(zip(trials["tags.mlflow.runName"], trials["run_id"], strict=True))
    return Tracked(
        config.name, storage, tracking, str(runs["experiment_id"].iloc[0]), ctx.parent_run, names
    )


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held together while chosen, so all different)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def artifacts_dir() -> Path:
    """Where screenshots are kept: $ADMMSEARCH_TEST_ARTIFACTS, else test-artifacts/."""
    path = Path(os.environ.get("ADMMSEARCH_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def ctrl_c_reaches_it() -> None:
    """In the child before exec: SIGINT as in a foreground command. A test run started in the
    background (``pytest &``, ``nohup``) has SIGINT ignored, which children inherit and Python
    keeps, so the Ctrl-C these tests send would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_output(
    ui: subprocess.Popen, out: Path, wanted: list[str], timeout: float = 240
) -> str:
    """The ui's stdout once it holds every ``wanted`` text; fails if the ui exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text()
        if all(w in text for w in wanted):
            return text
        assert ui.poll() is None, f"admmsearch ui exited with {ui.returncode}: {text}"
        time.sleep(0.5)
    pytest.fail(f"admmsearch ui printed no {wanted} within {timeout} s: {out.read_text()}")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def chromium() -> webdriver.Chrome:
    """Headless Chromium through the Debian chromedriver."""
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "the UI test needs the Debian packages chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver; .ci/run does this)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait_for(driver: webdriver.Chrome, css: str, what: str) -> WebElement:
    """The visible element at ``css``; on timeout a screenshot of the page and a clear failure."""
    try:
        return WebDriverWait(driver, WAIT_S).until(
            EC.visibility_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        shot = artifacts_dir() / "ui-failure.png"
        driver.save_screenshot(str(shot))
        text = driver.find_element(By.TAG_NAME, "body").text[:600]
        pytest.fail(
            f"{what} not shown within {WAIT_S} s at {driver.current_url}; "
            f"screenshot {shot}; page text: {text!r}"
        )


def assert_screenshot(path: Path) -> None:
    """A real PNG of a rendered page: big enough, and more than a few colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 600 and len(data) > 20_000, (width, height, len(data))
    colours = Image.open(path).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, f"{path} is nearly blank"


def check_mlflow_ui(driver: webdriver.Chrome, url: str, tracked: Tracked) -> Path:
    """The experiment in the list, its parent run, and (expanded) the trial runs; a screenshot."""
    driver.get(f"{url}/#/experiments")
    link = wait_for(
        driver,
        f"a[href$='/experiments/{tracked.experiment_id}']",
        "the experiment in the experiment list",
    )
    assert link.text.strip() == tracked.name
    driver.get(f"{url}/#/experiments/{tracked.experiment_id}/runs?workflowType=machine_learning")
    parent = wait_for(driver, f"a[href$='/runs/{tracked.parent_run}']", "the study's parent run")
    assert parent.text.strip() == tracked.name
    first_trial = f"a[href$='/runs/{min(tracked.trial_runs.values())}']"
    if not driver.find_elements(By.CSS_SELECTOR, first_trial):  # nested runs start collapsed
        parent.find_element(By.XPATH, "ancestor::*[@role='gridcell'][1]//button").click()
    for name, run_id in sorted(tracked.trial_runs.items()):
        trial = wait_for(driver, f"a[href$='/runs/{run_id}']", f"the run {name}")
        assert trial.text.strip() == name
    shot = artifacts_dir() / "mlflow-ui-runs.png"
    driver.save_screenshot(str(shot))
    return shot


def check_dashboard(driver: webdriver.Chrome, url: str, tracked: Tracked) -> Path:
    """The study in the dashboard's API and on its page; a screenshot."""
    with NO_PROXY.open(f"{url}/api/studies", timeout=30) as answer:
        studies = json.load(answer)["study_summaries"]
    assert tracked.name in [s["study_name"] for s in studies]
    driver.get(f"{url}/dashboard")
    WebDriverWait(driver, WAIT_S).until(
        EC.text_to_be_present_in_element((By.TAG_NAME, "body"), tracked.name)
    )
    shot = artifacts_dir() / "optuna-dashboard.png"
    driver.save_screenshot(str(shot))
    return shot


@pytest.mark.slow
def test_ui_shows_the_study_runs_in_chromium_and_stops_cleanly(tmp_path, tiny_study) -> None:
    tracked = run_tiny_study(tiny_study(name="ui-study", enqueue=[], budget={"trials": 2}))
    assert sorted(tracked.trial_runs) == ["trial-0", "trial-1"]
    port, dashboard_port = free_ports(2)
    out, err = tmp_path / "ui.out", tmp_path / "ui.err"
    mlflow_url, dashboard_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}"
    with out.open("w") as stdout, err.open("w") as stderr:
        ui = subprocess.Popen(
            [
                str(ADMMSEARCH),
                "ui",
                "--storage",
                tracked.storage,
                "--tracking-uri",
                tracked.tracking_uri,
                "--port",
                str(port),
                "--dashboard-port",
                str(dashboard_port),
            ],
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
            preexec_fn=ctrl_c_reaches_it,
        )
    children: set[int] = set()
    try:
        dashboard_line = (
            f"Optuna dashboard: {dashboard_url}"
            if HAS_DASHBOARD
            else "Optuna dashboard: not installed"
        )
        wait_for_output(ui, out, [f"MLflow UI: {mlflow_url}", dashboard_line])
        children = descendants(ui.pid)
        assert len(children) >= 2 + HAS_DASHBOARD  # mlflow server, its uvicorn, the dashboard
        driver = chromium()
        try:
            shots = [check_mlflow_ui(driver, mlflow_url, tracked)]
            if HAS_DASHBOARD:
                shots.append(check_dashboard(driver, dashboard_url, tracked))
        finally:
            driver.quit()
        ui.send_signal(signal.SIGINT)
        code = ui.wait(timeout=60)
    finally:
        children |= descendants(ui.pid)
        for pid in {ui.pid} | children:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert code == 0 and "Traceback" not in err.read_text(), err.read_text()
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if running(pid)], "ui children left running"
    for shot in shots:
        assert_screenshot(shot)


@pytest.mark.slow
def test_ui_on_a_taken_port_is_a_one_line_error(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                str(ADMMSEARCH),
                "ui",
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'm.db'}",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"error: MLflow UI: port {port} on 127.0.0.1 is already in use; choose another with --port"
    )
    assert not (tmp_path / "m.db").exists()


@pytest.mark.skipif(not HAS_DASHBOARD, reason="optuna-dashboard is not installed")
def test_dashboard_port_taken_or_shared_is_refused_before_starting(tmp_path) -> None:
    mlflow_port, free = free_ports(2)
    uri, storage = f"sqlite:///{tmp_path / 'm.db'}", f"sqlite:///{tmp_path / 'o.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(
            UIError,
            match=r"^Optuna dashboard: port \d+ on 127.0.0.1 is already "
            r"in use; choose another with --dashboard-port$",
        ):
            serve_ui(
                uri,
                storage,
                host="127.0.0.1",
                port=mlflow_port,
                dashboard_port=taken.getsockname()[1],
                echo=print,
            )
    with pytest.raises(UIError, match="cannot share port"):
        serve_ui(uri, storage, host="127.0.0.1", port=free, dashboard_port=free, echo=print)
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_a_ui_that_dies_names_itself_and_its_log_without_the_password(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    [port] = free_ports(1)
    with pytest.raises(UIError) as failed:
        serve_ui(
            "nosuch://user:s3cret@host/db",
            None,
            host="127.0.0.1",
            port=port,
            dashboard_port=port + 1,
            echo=print,
        )
    message = str(failed.value)
    assert message.startswith("MLflow UI exited before answering (exit code 1): ")
    assert "unsupported URI 'nosuch://user:***@host/db'" in message
    assert "s3cret" not in message and "\n" not in message
    log = Path(message.rpartition("full log: ")[2])
    assert log.parent.parent == tmp_path and "Traceback" in log.read_text()


@pytest.mark.slow
def test_a_tracking_server_is_only_shown_with_its_password_masked() -> None:
    lines: list[str] = []
    serve_ui(
        "https://me:s3cret@mlflow.example.org",
        None,
        host="127.0.0.1",
        port=5000,
        dashboard_port=8080,
        echo=lines.append,
    )
    assert lines == [
        "MLflow UI: https://me:***@mlflow.example.org  (a tracking server: nothing to start)"
    ]


def test_mlflow_gets_its_store_from_the_environment_and_named_hosts_allowed(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_SERVER_ALLOWED_HOSTS", raising=False)
    uri = "postgresql://me:s3cret@db:5432/mlflow"
    [spec] = _mlflow_specs(uri, "ui.example.org", 5000, print)
    assert spec.env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert not any("s3cret" in arg for arg in spec.command)
    hosts = spec.command[spec.command.index("--allowed-hosts") + 1].split(",")
    assert {"ui.example.org", "ui.example.org:*", "localhost:*"} <= set(hosts)
    [local] = _mlflow_specs(f"sqlite:///{Path('/tmp/x/mlflow.db')}", "127.0.0.1", 5000, print)
    assert "--allowed-hosts" not in local.command
    root = local.command[local.command.index("--default-artifact-root") + 1]
    assert root == Path("/tmp/x/artifacts").as_uri()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DASHBOARD, reason="optuna-dashboard is not installed")
def test_the_storage_password_is_on_no_command_line(tmp_path) -> None:
    """A PostgreSQL URL with a password, given only in $ADMMSEARCH_STORAGE, reaches the
    dashboard (it lists the study) but no process's argv: not in /proc/<pid>/cmdline, not in ps."""
    import psycopg

    secret, database = "Pw-in-env-4711", f"admmsearch_ui_{os.getpid()}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    storage = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/{database}"
    optuna.create_study(study_name="in-env", storage=storage)
    [port] = free_ports(1)
    env = {**os.environ, "ADMMSEARCH_STORAGE": storage}
    out = tmp_path / "ui.out"
    with out.open("w") as stdout:
        ui = subprocess.Popen(
            [
                str(ADMMSEARCH),
                "ui",
                "--tracking-uri",
                "http://127.0.0.1:9",
                "--dashboard-port",
                str(port),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            preexec_fn=ctrl_c_reaches_it,
        )
    children: set[int] = set()
    try:
        text = wait_for_output(ui, out, [f"Optuna dashboard: http://127.0.0.1:{port}"])
        assert secret not in text and "postgres:***@" in text
        children = descendants(ui.pid)
        assert children, "no dashboard process"
        for pid in {ui.pid} | children:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        assert str(next(iter(children))) in ps and secret not in ps
        with NO_PROXY.open(f"http://127.0.0.1:{port}/api/studies", timeout=30) as response:
            studies = json.load(response)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["in-env"]
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0, out.read_text()
    finally:
        for pid in {ui.pid} | children:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
