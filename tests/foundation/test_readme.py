"""README's two commands are the ones that work: CI runs the same test command."""
from __future__ import annotations


def test_ci_runs_the_test_command_written_in_the_readme(repo_root):
    readme = (repo_root / "README.md").read_text()
    ci = (repo_root / ".ci" / "run").read_text()
    command = "scripts/setup-test-env && .venv/bin/python -m pytest"
    assert command in readme
    assert command in ci.splitlines()[-1]


def test_readme_tells_how_to_run_correo_on_the_quickstart(repo_root):
    """The first command runs the quickstart only: examples/production names a
    TLS Secret and a smarthost that do not exist on a newcomer's machine."""
    readme = (repo_root / "README.md").read_text()
    assert "scripts/up examples/quickstart\n" in readme
    assert "scripts/up examples/\n" not in readme
    up = (repo_root / "scripts" / "up").read_text()
    assert 'correo up "${@:-examples/quickstart}"' in up


def test_readme_links_stay_inside_the_repository(repo_root):
    readme = (repo_root / "README.md").read_text()
    assert "](../" not in readme and "DESIGN.md" not in readme  # no link out of the clone
    for target in ("docs/architecture.md", "docs/metrics.md"):
        assert f"]({target})" in readme and (repo_root / target).is_file()
