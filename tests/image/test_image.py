"""The container image: what the rendered pods and the chart expect of it, and
(opt-in, it takes minutes) the image really built with buildah and run.

Always on, from the Dockerfile itself: the entrypoint is ``correo``, the user
is the uid the pods run as, every port a rendered container or the chart
declares is exposed, ``HOME``/``TMPDIR`` are in the ``/tmp`` emptyDir of a
read-only root, what it copies exists and is not excluded by
``.dockerignore``, and the image name is the one the README, the chart and
``correo render`` use.  (``tests/envtest/test_pods_run.py`` runs the rendered
pods with this Dockerfile's ENTRYPOINT and ENV.)

Opt-in: ``CORREO_IMAGE_BUILD=1 .venv/bin/python -m pytest tests/image`` runs
``scripts/build-image``: the base is Debian bookworm made here with
``debootstrap`` (minbase plus python3, python3-venv, python-is-python3, passwd,
ca-certificates; cached in ``~/.cache/correo/image`` and imported once as
``localhost/correo-base:bookworm``), the Dockerfile built on it with ``buildah
bud``, then the image's entrypoint run with ``buildah run``: ``correo
--version`` and ``correo serve relay --help``, as uid 10001.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_REPO = "ghcr.io/correo-dev/correo"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def rendered_quickstart() -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(ROOT / "examples")],
                          capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def correo_workloads() -> list[dict]:
    """The rendered Deployments and StatefulSets that run correo's image (a
    managed rspamd runs rspamd's own image, with its own user and ports)."""
    return [o for o in rendered_quickstart() if o["kind"] in ("Deployment", "StatefulSet")
            and all(c["image"].startswith(IMAGE_REPO + ":") for c in o["spec"]["template"]["spec"]["containers"])]


class TestDockerfileContract:
    def test_the_entrypoint_is_correo_and_the_default_command_the_operator(self):
        stage = dict(final_stage())
        assert json.loads(stage["ENTRYPOINT"]) == ["correo"]
        assert json.loads(stage["CMD"]) == ["operator"]

    def test_it_runs_as_the_uid_the_pods_and_the_chart_ask_for(self):
        user = dict(final_stage())["USER"]
        assert user == "10001:10001"
        workloads = correo_workloads()
        assert len(workloads) >= 3  # relay, queue, mailstore at least
        for obj in workloads:
            sc = obj["spec"]["template"]["spec"]["securityContext"]
            assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (10001, 10001, 10001)
        chart = (ROOT / "helm/correo/templates/deployment.yaml").read_text()
        assert "runAsUser: 10001" in chart and "runAsGroup: 10001" in chart

    def test_every_declared_container_port_is_exposed(self):
        exposed = {int(p) for w, rest in final_stage() if w == "EXPOSE" for p in rest.split()}
        ports = set()
        for obj in correo_workloads():
            for c in obj["spec"]["template"]["spec"]["containers"]:
                ports |= {p["containerPort"] for p in c.get("ports") or []}
        chart_values = yaml.safe_load((ROOT / "helm/correo/values.yaml").read_text())
        ports.add(chart_values["metrics"]["port"])
        assert ports <= exposed, f"not EXPOSEd: {sorted(ports - exposed)}"

    def test_home_and_tmpdir_are_in_the_tmp_volume_of_the_read_only_root(self):
        env = {}
        for word, rest in final_stage():
            if word == "ENV":
                for token in rest.split():
                    key, _, value = token.partition("=")
                    env[key] = value
        assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
        for obj in correo_workloads():
            (c,) = obj["spec"]["template"]["spec"]["containers"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}

    def test_what_it_copies_exists_and_is_not_ignored(self):
        ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
        sources = [s for w, rest in instructions() if w == "COPY" and not rest.startswith("--from")
                   for s in rest.split()[:-1]]
        assert sources
        for src in sources:
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src.rstrip("/"), pat.rstrip("/")) for pat in ignored), src

    def test_one_image_name_everywhere(self):
        from correo_operator import __version__, render
        assert render.DEFAULT_IMAGE == f"{IMAGE_REPO}:{__version__}"
        values = yaml.safe_load((ROOT / "helm/correo/values.yaml").read_text())
        assert values["image"]["repository"] == IMAGE_REPO
        readme = (ROOT / "README.md").read_text()
        assert f"{IMAGE_REPO}:{__version__}" in readme and "scripts/build-image" in readme


# ---------------------------------------------------------------------------
# Opt-in: the real build
# ---------------------------------------------------------------------------

BUILD = os.environ.get("CORREO_IMAGE_BUILD", "") not in ("", "0")
HOW = ("the image build takes minutes and needs the network (deb.debian.org, PyPI): run "
       "`CORREO_IMAGE_BUILD=1 .venv/bin/python -m pytest tests/image` (or scripts/build-image)")


def buildah(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    if not BUILD:
        pytest.skip(HOW)
    if shutil.which("buildah") is None:
        pytest.skip("no buildah on this machine: apt-get install buildah")
    info = buildah("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"buildah cannot run here: {info.stderr.strip()[:500]}")
    base_cached = buildah("inspect", "--type", "image", "localhost/correo-base:bookworm", check=False).returncode == 0
    if not base_cached and not os.environ.get("BASE_IMAGE"):
        if shutil.which("debootstrap") is None:
            pytest.skip("no debootstrap to make the base: apt-get install debootstrap, or set BASE_IMAGE")
        if os.geteuid() != 0:
            pytest.skip("debootstrap needs root to make the base; set BASE_IMAGE to a registry image instead")
    done = subprocess.run([str(ROOT / "scripts" / "build-image")], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "IMAGE": "localhost/correo-test"})
    assert done.returncode == 0, done.stderr[-5000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def container(image):
    ctr = buildah("from", "--pull-never", image).stdout.strip().splitlines()[-1]
    yield ctr
    buildah("rm", ctr, check=False)


def entrypoint(image: str) -> list[str]:
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)
    return config["OCIv1"]["config"]["Entrypoint"]


@pytest.mark.timeout(2400)  # the first build makes the base with debootstrap
def test_the_built_image_says_its_version(image, container):
    from correo_operator import __version__
    cmd = entrypoint(image)
    assert cmd == ["correo"]
    done = buildah("run", container, "--", *cmd, "--version")
    assert done.stdout.strip() == f"correo {__version__}"


@pytest.mark.timeout(2400)
def test_the_built_image_serves_relay_help_as_uid_10001(image, container):
    done = buildah("run", container, "--", *entrypoint(image), "serve", "relay", "--help")
    assert "--config" in done.stdout
    assert buildah("run", container, "--", "id", "-u").stdout.strip() == "10001"
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "10001:10001" and config["Cmd"] == ["operator"]
