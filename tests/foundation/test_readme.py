"""README's two commands are the ones that work: CI runs the same test command."""
from __future__ import annotations


def test_ci_runs_the_test_command_written_in_the_readme(repo_root):
    readme = (repo_root / "README.md").read_text()
    ci = (repo_root / ".ci" / "run").read_text()
    command = "scripts/setup-test-env && .venv/bin/python -m pytest"
    assert command in readme
    assert command in ci.splitlines()[-1]


def test_readme_tells_how_to_run_correo_on_the_examples(repo_root):
    readme = (repo_root / "README.md").read_text()
    assert "scripts/up examples/" in readme
    assert "correo up" in (repo_root / "scripts" / "up").read_text()
