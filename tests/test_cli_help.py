"""`--help` of every command, as a user runs it: a real process, exit 0, nothing on stderr.

Regression: with click 8.2+ a sub-command's ``--help`` raises ``click.exceptions.Exit`` inside
the group, which the one-line error wrapper took for a failure (``error: Exit: 0``, exit 1).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from admmsearch.cli import main

COMMANDS = sorted(main.commands)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "admmsearch", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_exits_0_without_error(command: str) -> None:
    run = _run(command, "--help")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert f"Usage: python -m admmsearch {command}" in run.stdout


@pytest.mark.slow
def test_group_help_and_bare_command_print_help_and_exit_0() -> None:
    for args in (("--help",), (), ("--debug", "list", "--help")):
        run = _run(*args)
        assert run.returncode == 0, (args, run.stderr)
        assert run.stderr == "" and "Usage:" in run.stdout
        assert not run.stdout.startswith("error")


def test_help_in_process_exits_0_for_every_command() -> None:
    from click.testing import CliRunner

    for command in COMMANDS:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "error:" not in result.output
