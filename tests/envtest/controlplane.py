"""A real Kubernetes control plane for tests (what Go operators call *envtest*).

etcd + kube-apiserver, started once per test session; kube-controller-manager
(garbage collection, StatefulSet → PVC creation, namespace deletion, service
account tokens) only when a test asks for it.  No kubelet: Pods stay Pending.

Where the binaries come from, in order:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention; ``setup-envtest use 1.36 -p
   path`` prints such a folder on a laptop or in public CI);
2. the folder ``scripts/setup-test-env`` fills from the team's ``shared/envtest``
   (``${XDG_CACHE_HOME:-~/.cache}/correo-envtest/v1.36.2``).

A folder qualifies when it holds ``etcd`` and ``kube-apiserver``.  The API
server runs with RBAC, an audit log of every write (tests count the
operator's writes there) and a static admin token; :meth:`ControlPlane.token_for`
returns a bound token of any ServiceAccount (TokenRequest API), so that code
under test can run with exactly the permissions the chart grants.

This module knows nothing of correo; ``conftest.py`` turns it into fixtures.
"""
from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

VERSION = "v1.36.2"
HOW_TO_GET = (
    "no Kubernetes control plane binaries (etcd, kube-apiserver): run scripts/setup-test-env "
    "(it installs xz-utils and etcd-server and unpacks ../shared/envtest into "
    "~/.cache/correo-envtest/v1.36.2), or point KUBEBUILDER_ASSETS at a folder holding etcd and "
    "kube-apiserver (e.g. `setup-envtest use 1.36 -p path`)")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    # Metadata level (who did what, and the answer; not the bodies): every write, and every
    # request of the ServiceAccounts in correo-system (code under test runs as those).
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        # The bodies of what code under test writes, to show what an unexpected write changed.
        {"level": "Request", "userGroups": ["system:serviceaccounts:correo-system"],
         "verbs": ["create", "update", "patch"]},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts:correo-system"]},
        {"level": "None"},
    ],
}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def default_assets_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "correo-envtest" / VERSION


def find_assets() -> Path | None:
    """The folder holding etcd and kube-apiserver (see the module docstring), or None."""
    candidates = []
    if os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(os.environ["KUBEBUILDER_ASSETS"]))
    candidates.append(default_assets_dir())
    for folder in candidates:
        if all(os.access(folder / b, os.X_OK) for b in ("etcd", "kube-apiserver")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StartError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            _signal_group(self.popen, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen, signal.SIGKILL)
                self.popen.wait(10)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager on demand) under ``workdir``."""

    def __init__(self, assets: Path, workdir: Path) -> None:
        self.assets = assets
        self.dir = workdir
        self.token = secrets.token_hex(16)
        self.processes: dict[str, Process] = {}
        self.port = 0
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "audit.log"

    # -- lifecycle -------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "ControlPlane":
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc:
                proc.stop()

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = spawn([str(self.assets / name), *args], stdout=out, cwd=self.dir)
        proc = self.processes[name] = Process(name, popen, log)
        return proc

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "--data-dir", str(self.dir / "etcd"), "--name", "default",
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway store: no need to wait for the disk
        ])

    def _start_apiserver(self) -> None:
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                           capture_output=True)
        (self.dir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        (self.dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self.port = free_port()
        self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--cert-dir={self.dir / 'certs'}",
            f"--token-auth-file={self.dir / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pub}", f"--service-account-signing-key-file={key}",
            "--service-cluster-ip-range=10.96.0.0/24", "--enable-priority-and-fairness=false",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
        ])
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_doc("admin", self.token)))

    def kubeconfig_doc(self, user: str, token: str, namespace: str = "default") -> dict:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "envtest", "cluster": {"server": self.server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "envtest", "user": user, "namespace": namespace}}],
        }

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # /readyz first, then /openapi/v2 (kubectl's client-side validation and explain need it;
        # on a loaded machine it answers 503 for some seconds after /readyz).
        for path in ("/readyz", "/openapi/v2", "/openapi/v3"):
            while True:
                for proc in self.processes.values():
                    if proc.popen.poll() is not None:
                        raise StartError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
                try:
                    status, _ = self.request("GET", path, timeout=5)
                    if status == 200:
                        break
                except (OSError, urllib.error.URLError):
                    pass
                if time.monotonic() > deadline:
                    raise StartError(f"the API server did not answer {path} within {timeout:.0f}s:\n"
                                     f"{self.processes['kube-apiserver'].tail()}")
                time.sleep(0.25)

    # -- the controller manager, on demand --------------------------------

    def ensure_controller_manager(self, timeout: float = 90) -> None:
        """Start kube-controller-manager once (GC, StatefulSet PVCs, namespaces, tokens)."""
        proc = self.processes.get("kube-controller-manager")
        if proc and proc.popen.poll() is None:
            return
        if not os.access(self.assets / "kube-controller-manager", os.X_OK):
            raise StartError(f"no kube-controller-manager in {self.assets}")
        port = free_port()
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--leader-elect=false", f"--service-account-private-key-file={self.dir / 'sa.key'}",
            f"--cert-dir={self.dir / 'kcm-certs'}", "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route",
            "--concurrent-gc-syncs=5",
        ])
        deadline = time.monotonic() + timeout
        ctx = _insecure()
        while True:
            proc = self.processes["kube-controller-manager"]
            if proc.popen.poll() is not None:
                raise StartError(f"kube-controller-manager exited:\n{proc.tail()}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=5) as rsp:
                    if rsp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise StartError(f"kube-controller-manager not healthy within {timeout:.0f}s:\n{proc.tail()}")
            time.sleep(0.25)

    # -- talking to it ------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                content_type: str = "application/json", timeout: float = 30) -> tuple[int, Any]:
        """One REST call; (HTTP status, decoded JSON or text)."""
        data = None
        headers = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=_insecure(), timeout=timeout) as rsp:
                status, raw = rsp.status, rsp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount (TokenRequest), as a pod would get it."""
        status, doc = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise RuntimeError(f"TokenRequest for {namespace}/{service_account}: {status} {doc}")
        return doc["status"]["token"]

    def audit_events(self, user: str | None = None, *, writes_only: bool = False) -> list[dict]:
        """What the API server recorded (see AUDIT_POLICY), optionally of one user / writes only."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            if user and event.get("user", {}).get("username") != user:
                continue
            if writes_only and event.get("verb") not in WRITES:
                continue
            events.append(event)
        return events


# -- processes that cannot outlive the test run ------------------------------------------
#
# Every process the tests start here (etcd, kube-apiserver, kube-controller-manager, the
# node's ``unshare``) is made by :func:`spawn`: in a session (process group) of its own, so
# that a stop reaches all of it and a Ctrl-C of pytest does not, and with PR_SET_PDEATHSIG
# = SIGKILL, so that the kernel kills it the moment the pytest process dies, however it dies
# (``kill -9``, the OOM killer, a CI timeout): nothing runs in Python then, so no
# ``finally`` or ``atexit`` could do it.  ``test_process_lifetime.py`` kills a pytest that
# holds a control plane and checks that nothing of it is left.
#
# Two details make it hold:
# * the death signal follows the *thread* that forked, not the process: spawn only from
#   the main thread (session fixtures run there), or a thread ending would kill the child;
# * the parent may die between fork and prctl: the child then checks that its parent is
#   still the process that forked it, and kills itself if not.
# The preexec function only calls a prctl looked up beforehand (no dlopen, no imports in
# the child of a threaded process, where those could deadlock).

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process calling this dies."""
    parent = os.getpid()

    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


def spawn(argv: list[str], *, stdout: Any, cwd: Path | str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a test-owned process: its own session, killed with this process (see above)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"spawn {argv[0]} from the main thread: PR_SET_PDEATHSIG would kill it "
                           f"when thread {threading.current_thread().name} ends")
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                            env=env, start_new_session=True, preexec_fn=die_with_parent())


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # spawn() made it a session leader: its group is its pid
    except ProcessLookupError:
        pass


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def which(binary: str) -> str | None:
    return shutil.which(binary)
