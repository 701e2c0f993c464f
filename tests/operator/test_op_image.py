"""The container image, checked without a Docker engine: the Dockerfile parses,
has the base-image argument, runs as a non-root user that matches the rendered
pods, keeps to a read-only root, and its entry point is the ``correo`` console
script whose subcommands the chart and the rendered pods call."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from correo_operator import cli, render
from correo_operator.model import MailDomain

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a line continuation runs off the end"
    return out


def stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())
KNOWN = {"ARG", "FROM", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}


def test_the_dockerfile_parses_into_known_instructions():
    assert {w for w, _ in DOCKERFILE} <= KNOWN
    assert DOCKERFILE[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert all(rest.startswith("${BASE_IMAGE}") for w, rest in DOCKERFILE if w == "FROM")


def test_the_final_stage_runs_as_the_non_root_user_the_pods_expect():
    final = stages(DOCKERFILE)[-1]
    users = [rest for w, rest in final if w == "USER"]
    assert users, "the final stage must name a USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid, so runAsNonRoot can verify it"
    assert int(uid) == render.UID and int(gid or uid) == render.UID
    run = " ".join(rest for w, rest in final if w == "RUN")
    assert f"--uid {render.UID}" in run


def test_the_image_writes_nothing_outside_volumes_and_tmp():
    final = stages(DOCKERFILE)[-1]
    env = " ".join(rest for w, rest in final if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    build = " ".join(rest for w, rest in stages(DOCKERFILE)[0] if w == "RUN")
    assert "compileall" in build, "byte code compiled at build time, not at run time"
    # The rendered pods mount what the services write to.
    domain = MailDomain.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
                                     "metadata": {"name": "x", "namespace": "n", "uid": "u"},
                                     "spec": {"domain": "example.com"}})
    for obj in render.render(domain, [], {}):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts


def test_the_entrypoint_is_the_correo_console_script_and_the_default_is_the_operator():
    final = stages(DOCKERFILE)[-1]
    assert [rest for w, rest in final if w == "ENTRYPOINT"] == ['["correo"]']
    assert [rest for w, rest in final if w == "CMD"] == ['["operator"]']
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["correo"] == "correo_operator.cli:main"
    assert cli.build_parser().parse_args(["operator"]).target == "correo_operator.kopfapp:main"


def test_every_service_command_the_pods_run_is_a_valid_correo_command():
    domain = MailDomain.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
                                     "metadata": {"name": "x", "namespace": "n", "uid": "u"},
                                     "spec": {"domain": "example.com"}})
    seen = set()
    for obj in render.render(domain, [], {}):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        assert "command" not in container, "the image's ENTRYPOINT (correo) runs the args"
        args = cli.build_parser().parse_args(container["args"])
        assert args.target == "correo_server.serve:main" and args.config == "/etc/correo"
        seen.add(args.service)
    assert seen == {"relay", "queue", "mailstore", "autoconfig"}


def test_every_copy_source_exists_and_is_not_ignored():
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for word, rest in DOCKERFILE:
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            path = src.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {src}: no such path in the repository"
            assert not any(fnmatch.fnmatch(path, pat) for pat in ignored), f"COPY {src} is excluded by .dockerignore"
    # The package needs its CRDs (package data reached through operator/correo_operator/crds).
    assert any(w == "COPY" and rest.startswith("crds/") for w, rest in DOCKERFILE)


def test_the_exposed_ports_are_the_services_ports():
    from correo_server.config import DEFAULT_PORTS
    exposed = {int(p) for w, rest in DOCKERFILE if w == "EXPOSE" for p in rest.split()}
    assert set(DEFAULT_PORTS.values()) <= exposed
    assert 8080 in exposed  # the operator's metrics port (chart default)
