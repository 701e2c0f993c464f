"""A kubelet-less test node: runs Pods as rendered, on this machine, offline.

There is no kubelet in the test control plane, so this does the part of one
that the contract between ``correo render`` and the servers needs, and no
more.  :class:`Node` starts ``nodeagent.py`` with ``unshare`` in new network,
mount and PID namespaces (with ``--user --map-root-user`` when not run as
root), so every pod process:

* sees its volumes at their ``mountPath`` (ConfigMap, Secret, projected with
  ``defaultMode``, emptyDir, PersistentVolumeClaim, the ServiceAccount token),
  materialised by :func:`materialise` into a folder per pod — what kubelet does;
* runs the image's entrypoint (``ENTRYPOINT``/``ENV`` read from the
  Dockerfile, ``correo`` being this checkout's, mounted at ``/opt/correo``
  as in the image) with the container's ``args`` and ``env``, on a read-only
  root when ``readOnlyRootFilesystem`` says so, as ``runAsUser`` when the
  tests run as root;
* resolves Service names (``<svc>.<ns>.svc[.cluster.local]``) to 127.0.0.1
  through the node's own DNS server: the servers' resolvers are unchanged,
  only the node's ``/etc/resolv.conf`` points there (as kubelet points pods at
  cluster DNS); nothing else resolves, and no packet can leave the node;
* reaches the API server as in a cluster (``KUBERNETES_SERVICE_HOST``:443).

All pods share the node's one network namespace (the rendered services listen
on distinct ports), and the tests reach them through :meth:`Node.forward`, a
port-forward like ``kubectl port-forward``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from controlplane import spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IMAGE_HOME = "/opt/correo"  # where the Dockerfile installs correo's virtualenv


class NodeUnavailable(RuntimeError):
    """This machine cannot make the namespaces a node needs."""


def unshare_command() -> list[str]:
    if shutil.which("unshare") is None:
        raise NodeUnavailable("no unshare (util-linux) on this machine")
    base = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    done = subprocess.run([*base, "true"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NodeUnavailable(
            f"`{' '.join(base)} true` failed here ({done.stderr.strip()}): the pod tests need network and mount "
            "namespaces (run as root, or enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)")
    return base


def image_config(dockerfile: Path = ROOT / "Dockerfile") -> dict[str, Any]:
    """ENTRYPOINT, ENV and USER of the Dockerfile's final stage (exec form only)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    final = stages[-1]
    env: dict[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    entrypoint: list[str] = []
    user = None
    for line in final.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                key, _, value = token.partition("=")
                env[key] = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), ""), value)
        elif line.startswith("ENTRYPOINT "):
            entrypoint = json.loads(line[len("ENTRYPOINT "):])
        elif line.startswith("USER "):
            user = line.split()[1]
    return {"entrypoint": entrypoint, "env": env, "user": user}


# ---------------------------------------------------------------------------
# Volumes, as kubelet materialises them
# ---------------------------------------------------------------------------

def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _items(values: dict[str, bytes], source: dict, default_mode: int) -> list[tuple[str, bytes, int]]:
    if source.get("items"):
        out = []
        for item in source["items"]:
            if item["key"] not in values:
                if source.get("optional"):
                    continue
                raise KeyError(f"key {item['key']} missing from {source.get('name')}")
            out.append((item["path"], values[item["key"]], item.get("mode", default_mode)))
        return out
    return [(key, value, default_mode) for key, value in values.items()]


def _values(obj: dict) -> dict[str, bytes]:
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()} if obj["kind"] == "ConfigMap" else \
        {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    if obj["kind"] == "ConfigMap":
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


Lookup = Callable[[str, str], "dict | None"]  # (kind, name) -> object in the pod's namespace


def materialise(pod: dict, folder: Path, lookup: Lookup, *, claims: Path, token: Callable[[], str] | None = None,
                ca: bytes | None = None, fs_group: int | None = None) -> list[tuple[str, str, bool]]:
    """Write the volumes of ``pod`` (a Pod, or a pod template with metadata) under ``folder``;
    return the mounts of its first container as (host path, mountPath, readOnly)."""
    spec = pod["spec"]
    namespace = pod["metadata"].get("namespace", "default")
    vols: dict[str, Path] = {}
    for vol in spec.get("volumes") or []:
        target = folder / "volumes" / vol["name"]
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in vol:
            os.chmod(target, 0o777)
        elif "persistentVolumeClaim" in vol:
            shutil.rmtree(target)
            real = claims / namespace / vol["persistentVolumeClaim"]["claimName"]
            real.mkdir(parents=True, exist_ok=True)
            target = real
        else:
            mode_default = (vol.get("projected") or vol.get("secret") or vol.get("configMap") or {}).get(
                "defaultMode", 0o644)
            sources = (vol["projected"]["sources"] if "projected" in vol else
                       [{"secret": {**vol["secret"], "name": vol["secret"]["secretName"]}}] if "secret" in vol else
                       [{"configMap": vol["configMap"]}] if "configMap" in vol else None)
            if sources is None:
                raise NotImplementedError(f"volume {vol['name']}: {sorted(vol)}")
            for src in sources:
                (kind, ref), = [(k, v) for k, v in src.items()]
                if kind == "serviceAccountToken":
                    _write(target / ref["path"], (token() if token else "").encode(), mode_default)
                    continue
                if kind == "downwardAPI":
                    raise NotImplementedError("downwardAPI volumes")
                obj = lookup({"secret": "Secret", "configMap": "ConfigMap"}[kind], ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise FileNotFoundError(f"{kind} {namespace}/{ref['name']} for volume {vol['name']}")
                for path, data, mode in _items(_values(obj), ref, mode_default):
                    _write(target / path, data, mode)
        vols[vol["name"]] = target
    (container,) = spec["containers"][:1]
    mounts = [(str(vols[m["name"]]), m["mountPath"], bool(m.get("readOnly"))) for m in container.get("volumeMounts") or []]
    automount = spec.get("automountServiceAccountToken", True)
    if automount and token is not None and not any(m[1] == SA_DIR for m in mounts):
        sa = folder / "volumes" / "kube-api-access"
        _write(sa / "token", token().encode(), 0o644)
        _write(sa / "ca.crt", ca or b"", 0o644)
        _write(sa / "namespace", namespace.encode(), 0o644)
        mounts.append((str(sa), SA_DIR, True))
    if fs_group is not None and os.geteuid() == 0:
        for host, _, _ in mounts:
            for dirpath, dirnames, filenames in os.walk(host):
                os.chown(dirpath, 0, fs_group)
                os.chmod(dirpath, os.stat(dirpath).st_mode | 0o2070)  # kubelet's fsGroup: setgid, group rwx
                for f in filenames:
                    os.chown(os.path.join(dirpath, f), 0, fs_group)
    return mounts


# ---------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------

class Node:
    def __init__(self, workdir: Path, *, api_port: int | None = None) -> None:
        self.dir = workdir
        self.api_port = api_port
        self.image = image_config()
        self.proc: subprocess.Popen | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="node-forwarder", daemon=True)
        self.forwards: dict[int, int] = {}
        self.pods: dict[str, dict] = {}

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 30) -> "Node":
        cmd = unshare_command()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        if self.api_port:
            self._call(asyncio.start_unix_server(self._api_pipe, str(self.dir / "api.sock")))
        # unshare --kill-child: the agent (PID 1 of the node's PID namespace, and with it every
        # pod) is killed when unshare is, and unshare when this process dies (spawn).
        with open(self.dir / "agent.log", "ab") as log:
            self.proc = spawn([*cmd, sys.executable, str(HERE / "nodeagent.py"), str(self.dir),
                               "root" if os.geteuid() == 0 else "user"], stdout=log)
        deadline = time.monotonic() + timeout
        while not (self.dir / "agent.ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NodeUnavailable(f"the node agent did not start:\n{self.agent_log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        for name in list(self.pods):
            try:
                self.stop_pod(name)
            except Exception:  # noqa: BLE001 - the agent's exit stops them anyway
                pass
        if self.proc and self.proc.poll() is None:
            try:
                self.request({"op": "shutdown"})
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(10)
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def agent_log(self) -> str:
        try:
            return (self.dir / "agent.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- talking to the agent -------------------------------------------------

    def _call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, req: dict, timeout: float = 60) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.dir / "agent.sock"))
            s.sendall((json.dumps(req) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.get("ok"):
            raise RuntimeError(f"node agent: {req['op']}: {reply.get('error')}")
        return reply

    async def _api_pipe(self, reader, writer) -> None:
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.api_port)
        except OSError:
            writer.close()
            return
        await _splice(reader, writer, r2, w2)

    def forward(self, port: int) -> int:
        """A port on the host's loopback that reaches ``port`` inside the node."""
        if port not in self.forwards:
            async def handle(reader, writer):
                try:
                    r2, w2 = await asyncio.open_unix_connection(str(self.dir / "agent.sock"))
                    w2.write((json.dumps({"op": "connect", "port": port}) + "\n").encode())
                    await w2.drain()
                    reply = json.loads(await r2.readline() or b"{}")
                except OSError:
                    reply = {}
                if not reply.get("ok"):
                    writer.close()
                    return
                await _splice(reader, writer, r2, w2)

            server = self._call(asyncio.start_server(handle, "127.0.0.1", 0))
            self.forwards[port] = server.sockets[0].getsockname()[1]
        return self.forwards[port]

    def listening(self) -> set[int]:
        return set(self.request({"op": "listening"})["ports"])

    def set_dns(self, a: dict[str, str], mx: dict[str, list[tuple[int, str]]] | None = None) -> None:
        self.request({"op": "dns", "a": a, "mx": mx or {}})

    # -- pods -----------------------------------------------------------------

    def run_pod(self, name: str, pod: dict, mounts: list[tuple[str, str, bool]], *,
                extra_env: dict[str, str] | None = None) -> None:
        """Run the first container of ``pod`` (a Pod or pod template with metadata) as ``name``."""
        spec = pod["spec"]
        (container,) = spec["containers"][:1]
        namespace = pod["metadata"].get("namespace", "default")
        env = dict(self.image["env"])
        env.update({"HOSTNAME": name, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
        for item in container.get("env") or []:
            if "value" not in item:
                raise NotImplementedError(f"env {item['name']}: only literal values are supported")
            env[item["name"]] = item["value"]
        env.update(extra_env or {})
        argv = list(container.get("command") or self.image["entrypoint"]) + list(container.get("args") or [])
        psc, csc = spec.get("securityContext") or {}, container.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup", uid))
        user = None if uid is None else {"uid": uid, "gid": gid if gid is not None else uid,
                                         "groups": sorted({g for g in (gid, psc.get("fsGroup")) if g is not None})}
        # The image's virtualenv lives at /opt/correo; this checkout's is mounted there, and the
        # checkout (which the editable install points into) and the Python it was made with at
        # their own paths.
        venv = Path(sys.prefix)
        system = [(str(venv), IMAGE_HOME, True), (str(ROOT), str(ROOT), True)]
        base = Path(sys.base_prefix)
        if not str(base).startswith("/usr"):
            system.append((str(base), str(base), True))
        log = self.dir / f"{name}.log"
        self.pods[name] = {"log": log, "container": container, "namespace": namespace}
        self.request({"op": "run", "name": name, "spec": {
            "argv": argv, "env": env, "workingDir": container.get("workingDir"),
            "mounts": system + mounts, "user": user, "log": str(log), "hostname": name,
            "readOnlyRootFilesystem": bool(csc.get("readOnlyRootFilesystem")),
            "search": [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        }})

    def stop_pod(self, name: str) -> int | None:
        self.pods.pop(name, None)
        return self.request({"op": "stop", "name": name})["exitCode"]

    def pod_state(self, name: str) -> dict:
        return self.request({"op": "state", "name": name})

    def pod_log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def container_port(self, name: str, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for p in self.pods[name]["container"].get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise KeyError(f"pod {name} has no port named {port}")

    def probe(self, name: str, kind: str = "readinessProbe", timeout: float = 5) -> tuple[int, str]:
        """Run the container's HTTP probe once, through a port-forward: (status, body)."""
        import urllib.error
        import urllib.request
        get = self.pods[name]["container"][kind]["httpGet"]
        port = self.forward(self.container_port(name, get["port"]))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=timeout) as rsp:
                return rsp.status, rsp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def _splice(r1, w1, r2, w2) -> None:
    await asyncio.gather(_pipe(r1, w2), _pipe(r2, w1))
    for w in (w1, w2):
        w.close()


def service_names(services: list[dict]) -> dict[str, str]:
    """Cluster DNS for these Services: every name a pod may use → 127.0.0.1."""
    out = {}
    for svc in services:
        name, ns = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
        for fqdn in (f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
            out[fqdn] = "127.0.0.1"
    return out


def pod_of(workload: dict, ordinal: int = 0) -> tuple[str, dict]:
    """The pod a Deployment or StatefulSet makes (name, Pod-shaped dict): its template, with a
    StatefulSet's volumeClaimTemplates as the claims its controller names ``<tmpl>-<sts>-<n>``."""
    meta, spec = workload["metadata"], workload["spec"]
    template = spec["template"]
    pod_spec = dict(template["spec"])
    volumes = list(pod_spec.get("volumes") or [])
    if workload["kind"] == "StatefulSet":
        name = f"{meta['name']}-{ordinal}"
        for vct in spec.get("volumeClaimTemplates") or []:
            claim = vct["metadata"]["name"]
            volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": f"{claim}-{name}"}})
    else:
        name = f"{meta['name']}-{ordinal}"
    pod_spec["volumes"] = volumes
    return name, {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {**template.get("metadata", {}), "name": name,
                               "namespace": meta.get("namespace", "default")},
                  "spec": pod_spec}


def self_signed_tls(hostname: str) -> dict[str, str]:
    """tls.crt and tls.key (PEM) for ``hostname``, as cert-manager would write them."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(key, hashes.SHA256()))
    return {"tls.crt": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "tls.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}
