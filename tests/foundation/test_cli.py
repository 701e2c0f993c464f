"""The ``correo`` command as a user meets it: validate, render, --version, --help."""
from __future__ import annotations

import subprocess
import sys

import yaml


def correo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "correo_operator.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_validate_examples_exits_zero(examples_dir):
    result = correo("validate", str(examples_dir))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_lists_every_error_and_exits_one(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: correo.dev/v1alpha1\nkind: MailDomain\nmetadata: {name: x}\n"
        "spec: {domain: NOPE, colour: blue}\n")
    result = correo("validate", str(tmp_path))
    assert result.returncode == 1
    assert "bad.yaml:4 (document 1, MailDomain default/x): spec.domain:" in result.stderr
    assert 'spec.colour: unknown field "colour"' in result.stderr
    assert "2 errors" in result.stderr


def test_render_prints_the_yaml_stream_the_operator_applies(examples_dir):
    result = correo("render", str(examples_dir / "quickstart"))
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Secret", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget",
            "NetworkPolicy"} <= kinds
    assert "wonderland" not in result.stdout  # alice's plaintext password


def test_render_refuses_invalid_input(tmp_path):
    (tmp_path / "bad.yaml").write_text("apiVersion: correo.dev/v1alpha1\nkind: Mailbox\nmetadata: {name: x}\nspec: {}\n")
    result = correo("render", str(tmp_path))
    assert result.returncode == 1 and "spec.address" in result.stderr and result.stdout == ""


def test_version_and_help():
    assert correo("--version").stdout.startswith("correo ")
    help_text = correo("--help").stdout
    for command in ("validate", "render", "up", "status", "queue", "serve", "operator"):
        assert command in help_text
    assert "examples:" in help_text


def test_validate_fails_when_there_is_nothing_to_validate(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    result = correo("validate", str(tmp_path))
    assert result.returncode == 1 and "no MailDomain or Mailbox" in result.stderr


def test_render_writes_multi_line_values_as_block_scalars_for_review(examples_dir):
    from correo_operator import commands, loading

    result = correo("render", str(examples_dir / "production"))
    assert result.returncode == 0, result.stderr
    assert "  correo.yaml: |\n    name: " in result.stdout  # one line per line: kubectl diff shows the line that changed
    assert "\\n" not in result.stdout.split("kind: ConfigMap", 1)[1].split("\n---", 1)[0]
    loaded = loading.load_paths([str(examples_dir / "production")])
    # the same objects as the operator applies, byte for byte once read back
    assert [o for o in yaml.safe_load_all(result.stdout) if o] == commands.render_documents(loaded)
