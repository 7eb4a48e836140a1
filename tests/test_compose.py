"""docker-compose.yml (no Docker engine here): its services, commands and environment must fit
the real CLIs (admmsearch's and mlflow's click commands parse them; optuna-dashboard's --help
lists its options) and point the workers at the postgres and mlflow services; with
docker-compose (or `docker compose`) installed, its `config` must accept the file."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from mlflow.cli import cli as mlflow_cli
from sqlalchemy.engine import make_url

from admmsearch.cli import main
from admmsearch.config import validate_study
from admmsearch.redact import redact_url
from admmsearch.search.study import prepare

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PASSWORD_REF = re.compile(r"^\$\{POSTGRES_PASSWORD:\?[^}]*\}$")


def parse(command: click.Command, args: list[str]) -> dict:
    """The params click parses from ``args``: an unknown option or bad value raises."""
    return command.make_context(command.name, list(args)).params


def worker_params() -> dict:
    command = SERVICES["worker"]["command"]
    assert command[:2] == ["admmsearch", "worker"]
    return parse(main.commands["worker"], command[2:])


def mlflow_params() -> dict:
    command = SERVICES["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    return parse(mlflow_cli.commands["server"], command[2:])


def test_compose_has_the_four_services_and_one_image_with_the_postgres_driver() -> None:
    assert set(SERVICES) == {"postgres", "mlflow", "worker", "dashboard"}
    for name in ("mlflow", "worker", "dashboard"):
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == "admmsearch"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install .*"\.\[postgres\]"', dockerfile)
    assert "optuna-dashboard" in dockerfile and "COPY studies ./studies" in dockerfile
    assert "WORKDIR /app" in dockerfile


def test_worker_runs_a_shipped_study_against_the_postgres_and_mlflow_services() -> None:
    params, pg = worker_params(), SERVICES["postgres"]["environment"]
    validate_study(ROOT / params["study_file"])
    url = make_url(params["storage"])
    assert url.drivername == "postgresql+psycopg" and url.password is None
    assert (url.host, url.port, url.username, url.database) == (
        "postgres",
        5432,
        pg["POSTGRES_USER"],
        pg["POSTGRES_DB"],
    )
    server = mlflow_params()
    assert params["tracking_uri"] == f"http://mlflow:{server['port']}"
    assert server["host"] == "0.0.0.0"
    assert f"mlflow:{server['port']}" in server["allowed_hosts"].split(",")
    worker = SERVICES["worker"]
    assert {"postgres", "mlflow"} <= set(worker["depends_on"])
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    assert worker["deploy"]["replicas"] >= 1
    workdir = inspect.signature(prepare).parameters["workdir"].default
    assert f"workdir:/app/{workdir}" in worker["volumes"]  # caches shared by the replicas


def test_mlflow_server_keeps_runs_in_postgres_and_serves_artifacts_from_a_volume() -> None:
    server, pg = mlflow_params(), SERVICES["postgres"]
    url = make_url(server["backend_store_uri"])
    assert (url.drivername, url.host, url.password) == ("postgresql+psycopg", "postgres", None)
    assert url.username == pg["environment"]["POSTGRES_USER"]
    init = [v for v in pg["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init) == 1
    sql = (ROOT / init[0].split(":")[0]).read_text()
    assert f"CREATE DATABASE {url.database};" in sql
    assert server["serve_artifacts"] is True
    assert f"mlartifacts:{server['artifacts_destination']}" in SERVICES["mlflow"]["volumes"]
    assert set(COMPOSE["volumes"]) >= {"postgres", "mlartifacts", "workdir"}


@pytest.mark.slow
def test_dashboard_reads_the_workers_storage_with_real_options() -> None:
    command = SERVICES["dashboard"]["command"]
    assert command[0] == "optuna-dashboard"
    assert command[1] == worker_params()["storage"]
    helped = subprocess.run(
        [str(Path(sys.executable).parent / "optuna-dashboard"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for arg in command[2:]:
        assert arg.split("=")[0] in helped, arg


def test_no_password_is_written_in_the_compose_file() -> None:
    """Passwords come from .env as ${POSTGRES_PASSWORD}; clients read it as PGPASSWORD."""
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key:
                assert PASSWORD_REF.match(value), (name, key)
        for arg in service.get("command", []):
            value = arg.split("=", 1)[-1]
            assert redact_url(value) == value, (name, arg)
        if name != "postgres":
            assert "PGPASSWORD" in env, name
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=\S+$", example, re.MULTILINE)


def _compose_tool() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.slow
def test_compose_config_accepts_the_file(monkeypatch) -> None:
    tool = _compose_tool()
    if tool is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    monkeypatch.setenv("POSTGRES_PASSWORD", "for-config-only")
    done = subprocess.run(
        [*tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert set(yaml.safe_load(done.stdout)["services"]) == set(SERVICES)
