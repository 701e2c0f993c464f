"""On a fresh machine the README's two commands install everything: no test
(and no try-it line) may depend on something installed here by hand.

Programs: every program a test runs (``shutil.which("x")``, or ``"x"`` first
in a command list) is in ``scripts/setup-test-env``'s ``TEST_PROGRAMS`` (or
comes from an Essential Debian package, or is the helm ``scripts/fetch-helm``
gets, or is named in ``OPT_IN_PROGRAMS`` for tests one turns on by hand),
and each listed program comes from a package in its ``APT_PACKAGES``.
The try-it lines ``correo up`` prints run programs that ``scripts/up``
installs.  Python: every module the tests import is declared in
``pyproject.toml`` (the ``test`` extra or the runtime dependencies), every
module correo itself imports is a runtime dependency (``scripts/up``
installs only those), and every declared dependency is used.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"subprocess", "asyncio", "shutil", "os"}  # subprocess.run(...), shutil.which(...), os.execvp(...)
RUNNERS = {"which", "run", "Popen", "check_output", "check_call", "call", "create_subprocess_exec",
           "execvp", "execlp", "spawnlp"}
FETCHED = {"helm": "scripts/fetch-helm", "kubectl": "scripts/fetch-helm"}


def script_list(script: str, name: str) -> list[str]:
    text = (ROOT / "scripts" / script).read_text()
    match = re.search(rf'^{name}="([^"]*)"', text, re.M)
    assert match, f"scripts/{script} has no {name}=\"...\" line"
    return match.group(1).split()


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def programs_run_by(files: list[Path]) -> dict[str, list[str]]:
    """Program name -> the files that run it: the first string of a command
    handed to subprocess/asyncio, or the name given to ``shutil.which``."""
    found: dict[str, list[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            if isinstance(func, ast.Attribute):
                if not (isinstance(func.value, ast.Name) and func.value.id in MODULES):
                    continue
                name = func.attr
            else:  # from subprocess import Popen; from shutil import which
                name = getattr(func, "id", None)
                if name in ("run", "call"):  # too common as names of the tests' own helpers
                    continue
            if name not in RUNNERS:
                continue
            first = node.args[0]
            if isinstance(first, (ast.List, ast.Tuple)) and first.elts:
                first = first.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and "/" not in first.value:
                found.setdefault(first.value, []).append(str(path.relative_to(ROOT)))
    return found


def debian_package_of(program: str) -> str | None:
    path = shutil.which(program)
    if path is None:
        return None
    candidates = []
    for p in (os.path.realpath(path), path):  # merged /usr: dpkg may know /bin/x for /usr/bin/x
        candidates += [p, p[4:]] if p.startswith("/usr/") else [p]
    for p in candidates:
        done = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            owner, sep, _ = line.partition(": ")
            if sep and " " not in owner:  # not "diversion by dash from: /bin/sh"
                return owner.split(",")[0].strip()
    return None


def is_essential(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True)
    return done.stdout.strip() == "yes"


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian machine (no dpkg-query)")


def test_every_program_a_test_runs_is_installed_by_setup_test_env():
    listed = set(script_list("setup-test-env", "TEST_PROGRAMS")) | set(script_list("setup-test-env", "OPT_IN_PROGRAMS"))
    used = programs_run_by(python_files("tests"))
    assert "swaks" in used and "fetchmail" in used  # the scan finds what the tests run
    unlisted = {prog: files for prog, files in used.items() if prog not in listed and prog not in FETCHED}
    if unlisted and shutil.which("dpkg-query"):
        unlisted = {p: f for p, f in unlisted.items() if not (debian_package_of(p) and is_essential(debian_package_of(p)))}
    assert not unlisted, ("tests run programs scripts/setup-test-env does not install "
                          f"(add them to TEST_PROGRAMS and their package to APT_PACKAGES): {unlisted}")
    setup = (ROOT / "scripts" / "setup-test-env").read_text()
    assert all(script in setup for script in FETCHED.values())


@needs_dpkg
def test_each_listed_program_comes_from_a_listed_package():
    packages = set(script_list("setup-test-env", "APT_PACKAGES"))
    wrong = {}
    for program in script_list("setup-test-env", "TEST_PROGRAMS"):
        package = debian_package_of(program)
        if package is None:
            pytest.fail(f"{program} is not installed here: run scripts/setup-test-env")
        if package not in packages:
            wrong[program] = package
    assert not wrong, f"programs whose package is missing from APT_PACKAGES: {wrong}"


def test_swaks_tls_support_is_installed_with_swaks():
    """swaks -tls needs Net::SSLeay, which --no-install-recommends skips."""
    for script, name in (("setup-test-env", "APT_PACKAGES"), ("up", "TRY_IT_PACKAGES")):
        assert "libnet-ssleay-perl" in script_list(script, name)
        assert "TLS supported" in (ROOT / "scripts" / script).read_text()  # its check asks swaks itself


def test_the_try_it_lines_run_programs_scripts_up_installs():
    from correo_operator import loading
    from correo_operator.local import up

    loaded = loading.load_paths([str(ROOT / "examples" / "quickstart")])
    ports = {name: 1 for name in ("submission", "imap", "imaps", "pop3", "pop3s")}
    lines = up.try_it(loaded, ports, "127.0.0.1")
    assert len(lines) == 2
    programs = {shlex.split(line)[0] for line in lines}
    assert programs <= set(script_list("up", "TRY_IT_PROGRAMS")), programs


# -- Python packages ---------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    def names(reqs):
        return {_norm(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0]) for r in reqs}
    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def imported_distributions(files: list[Path]) -> dict[str, list[str]]:
    """Distribution -> files importing it (the standard library and correo's own modules left out)."""
    local = {p.stem for p in python_files("tests", "bench")} | {"correo_server", "correo_operator"}
    local |= {d.name for folder in ("tests", "bench") for d in (ROOT / folder).iterdir() if d.is_dir()}
    owners = md.packages_distributions()
    found: dict[str, list[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local:
                    continue
                dists = owners.get(top)
                if not dists and id(node) in in_functions:
                    continue  # an optional tool imported when used (e.g. atheris for a fuzz entry point)
                assert dists, f"{path.relative_to(ROOT)} imports {top}, which no installed distribution provides"
                found.setdefault(_norm(dists[0]), []).append(str(path.relative_to(ROOT)))
    return found


def test_correo_imports_only_its_runtime_dependencies():
    runtime, _ = declared()
    used = imported_distributions(python_files("server", "operator"))
    missing = {d: files[:3] for d, files in used.items() if d not in runtime}
    assert not missing, f"correo imports packages that are not runtime dependencies in pyproject.toml: {missing}"


def test_tests_import_only_declared_packages():
    runtime, test = declared()
    used = imported_distributions(python_files("tests", "bench"))
    missing = {d: files[:3] for d, files in used.items() if d not in runtime | test}
    assert not missing, ("tests import packages pyproject.toml does not declare (they are here only by "
                         f"chance, e.g. as another package's dependency): {missing}")


def test_every_declared_dependency_is_used_where_it_is_declared():
    runtime, test = declared()
    by_correo = set(imported_distributions(python_files("server", "operator")))
    by_tests = set(imported_distributions(python_files("tests", "bench")))
    # A pytest plugin is used when its name appears in the pytest settings or in a test
    # (asyncio_mode, timeout, a marker or fixture): installing one is not using it.
    said = (ROOT / "pyproject.toml").read_text() + "".join(p.read_text() for p in python_files("tests"))
    plugins = {_norm(ep.dist.name) for ep in md.entry_points(group="pytest11")
               if ep.dist and re.search(rf"\b{re.escape(ep.name)}", said)}
    # ... or one a runtime dependency needs for a feature correo uses (pynacl: dkimpy's ed25519 extra).
    extras = set()
    for dist in runtime:
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        extras |= {_norm(re.split(r"[<>=!~ ;\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" in r}
    assert runtime - by_correo - extras == set(), "runtime dependencies correo never imports"
    unused = test - by_tests - plugins - {"pytest"}
    assert not unused, f"test dependencies nothing uses: {unused}"
    only_tests = {d for d in runtime if d in by_tests and d not in by_correo and d not in extras}
    assert not only_tests, f"runtime dependencies only the tests use (move them to the test extra): {only_tests}"
