"""What a newcomer meets in the first hour with the ``correo`` command: help
for every option, ``correo up`` on bad YAML (says what to fix, leaves
nothing behind), and one way of saying that no stack is running."""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys

import pytest

from correo_operator.cli import build_parser


def correo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "correo_operator.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def _parsers(parser: argparse.ArgumentParser, path: str = "correo"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_has_a_description_and_every_option_a_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        if path != "correo" and not parser.description and path.count(" ") == 1:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest in ("help", "version"):
                continue
            if not action.help and action.option_strings:
                missing.append(f"{path} {'/'.join(action.option_strings)}: no help")
    assert not missing, missing


def test_operator_help_says_what_it_does_and_what_the_metrics_port_serves():
    out = correo("operator", "--help").stdout
    assert "Watch MailDomains" in out and "/metrics" in out


def _bad_quickstart(tmp_path, examples_dir):
    bad = tmp_path / "yaml"
    bad.mkdir()
    for f in (examples_dir / "quickstart").iterdir():
        (bad / f.name).write_text(f.read_text())
    domain = bad / "maildomain.yaml"
    domain.write_text(domain.read_text().replace("  domain: example.com\n", "  domain: example.com\n  adress: x\n"))
    return bad


def test_up_on_invalid_yaml_says_what_to_fix_and_writes_no_data_folder(tmp_path, examples_dir):
    bad = _bad_quickstart(tmp_path, examples_dir)
    data = tmp_path / "data"
    result = correo("up", str(bad), "--data", str(data), "--ephemeral-ports")
    assert result.returncode == 1
    assert 'maildomain.yaml:10 (document 1, MailDomain default/example-com): spec.adress: unknown field "adress"' \
        in result.stderr
    assert "fix them and run `correo up` again" in result.stderr
    assert "nothing was started and no data folder was written" in result.stderr
    assert not data.exists()


def test_up_that_cannot_start_removes_the_data_folder_it_made(tmp_path, examples_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "data"
        result = correo("up", str(examples_dir / "quickstart"), "--data", str(data),
                        "--port-base", str(port - 2525))
    assert result.returncode == 1
    assert f"{port}" in result.stderr and "in use" in result.stderr
    assert not data.exists()


def test_up_that_cannot_start_keeps_an_existing_data_folder(tmp_path, examples_dir):
    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    (data / "mail" / "keep").write_text("mail")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = correo("up", str(examples_dir / "quickstart"), "--data", str(data),
                        "--port-base", str(busy.getsockname()[1] - 2525))
    assert result.returncode == 1
    assert (data / "mail" / "keep").read_text() == "mail"


@pytest.mark.parametrize("state", [None, "exited"])
def test_status_queue_and_apply_say_no_stack_is_running_the_same_way(tmp_path, state):
    if state == "exited":
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (tmp_path / "state.json").write_text(json.dumps({"pid": gone.pid}))
        why = f"its correo up, pid {gone.pid}, has exited"
    else:
        why = "no state.json"
    sentence = f"no local stack is running with data in {tmp_path} ({why}); start one with `correo up`"
    for command in (["status"], ["queue", "list"], ["apply"]):
        result = correo(*command, "--data", str(tmp_path))
        assert result.returncode == 1, command
        assert f"correo {command[0]}: {sentence}" in result.stderr, (command, result.stderr)


MISSPELT = """\
apiVersion: correo.dev/v1alpha1
kind: MailDomain
metadata:
  name: example-com
spec:
  domain: example.com
  aliases: [example.net]
---
apiVersion: correo.dev/v1alpha1
kind: Mailbox
metadata:
  name: bob
spec:
  adress: bob@example.com
  passwordSecretRef:
    name: bob-password
"""


def test_validate_names_the_line_of_each_error_in_file_order_and_guesses_misspelt_fields(tmp_path):
    (tmp_path / "a-good.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bob-password\nstringData:\n  password: x\n")
    (tmp_path / "b-mail.yaml").write_text(MISSPELT)
    result = correo("validate", str(tmp_path))
    assert result.returncode == 1
    path = tmp_path / "b-mail.yaml"
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        f'{path}:7 (document 1, MailDomain default/example-com): spec.aliases: unknown field "aliases" '
        '(did you mean "aliasDomains"?)',
        f"{path}:13 (document 2, Mailbox default/bob): spec.address: required field is missing",
        f'{path}:14 (document 2, Mailbox default/bob): spec.adress: unknown field "adress" '
        '(did you mean "address"?)',
    ]
    assert lines[-1] == "correo validate: 3 errors in 1 of 2 files"


def test_up_on_misspelt_yaml_points_at_the_line_and_counts_files_with_errors(tmp_path):
    (tmp_path / "mail.yaml").write_text(MISSPELT)
    result = correo("up", str(tmp_path), "--data", str(tmp_path / "data"), "--ephemeral-ports")
    assert result.returncode == 1
    assert f'{tmp_path / "mail.yaml"}:14 (document 2, Mailbox default/bob): spec.adress' in result.stderr
    assert "correo up: 3 errors in 1 file, each above with its file, line and field" in result.stderr
    assert not (tmp_path / "data").exists()
