"""The inside of a kubelet-less test node (see ``node.py``): runs as PID 1 of
fresh network, mount and PID namespaces that ``node.py`` creates with
``unshare``, and never outside them.

It does, inside the node's private network (only a loopback interface):

* the pods: each container in a root of its own (a read-only tmpfs holding
  bind mounts of the host's ``/usr`` and of the Python and project folders
  correo runs from, the image's ``/opt/correo``, and the pod's volumes at their
  ``mountPath``), started with ``chroot`` and, when the node runs as real root,
  the pod's ``runAsUser``/``runAsGroup``/``fsGroup``;
* cluster DNS: a UDP server on 127.0.0.1:53 answering the names it is given
  (Services → 127.0.0.1, test MX records), NXDOMAIN for the rest, so that
  nothing resolves or connects outside the node;
* the API server at 127.0.0.1:443 (``KUBERNETES_SERVICE_HOST``), forwarded to
  the host through the Unix socket ``api.sock`` that ``node.py`` serves;
* port forwarding for the tests (like ``kubectl port-forward``): a connection
  to the control socket asking ``connect`` becomes a pipe to 127.0.0.1:PORT.

Control protocol on ``agent.sock``: one JSON request line, one JSON reply line.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSRecord, MX

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
ST_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
            4096: MS_RELATIME}

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def umount(target: str) -> None:
    _libc.umount2(target.encode(), MNT_DETACH)


def remount_readonly(target: str) -> None:
    # In a user namespace a remount must keep the flags the original mount has locked.
    st = os.statvfs(target)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for bit, ms in ST_FLAGS.items():
        if st.f_flag & bit:
            flags |= ms
    mount("none", target, None, flags)


def bind(source: str, target: str, *, readonly: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        remount_readonly(target)


def loopback_up() -> None:
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


# ---------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------

class DNS(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.a: dict[str, str] = {}
        self.mx: dict[str, list[tuple[int, str]]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage in, nothing out
            return
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        known = name in self.a or name in self.mx
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype == "A" and name in self.a:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.a[name]), ttl=5))
        elif qtype == "MX" and name in self.mx:
            for pref, host in self.mx[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.MX, rdata=MX(host, pref), ttl=5))
        self.transport.sendto(reply.pack(), addr)


# ---------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------

HOST_ETC = ["passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "localtime", "host.conf", "gai.conf",
            "services", "protocols", "mime.types"]
HOST_ETC_DIRS = ["ssl", "alternatives", "ld.so.conf.d", "ca-certificates"]


class Pods:
    def __init__(self, workdir: Path, real_root: bool) -> None:
        self.workdir = workdir
        self.real_root = real_root
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.roots: dict[str, str] = {}

    def build_root(self, name: str, spec: dict) -> str:
        root = str(self.workdir / "roots" / name)
        os.makedirs(root, exist_ok=True)
        mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=755")
        for top in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
            host = f"/{top}"
            if os.path.islink(host):
                os.symlink(os.readlink(host), f"{root}/{top}")
            elif os.path.isdir(host):
                bind(host, f"{root}/{top}", readonly=True)
        bind("/usr", f"{root}/usr", readonly=True)
        os.makedirs(f"{root}/etc")
        for item in HOST_ETC:
            if os.path.exists(f"/etc/{item}"):
                shutil.copy2(f"/etc/{item}", f"{root}/etc/{item}", follow_symlinks=True)
        for item in HOST_ETC_DIRS:
            if os.path.isdir(f"/etc/{item}"):
                bind(f"/etc/{item}", f"{root}/etc/{item}", readonly=True)
        hostname = spec["hostname"]
        Path(f"{root}/etc/hostname").write_text(hostname + "\n")
        Path(f"{root}/etc/hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{hostname}\n")
        search = " ".join(spec.get("search") or [])
        Path(f"{root}/etc/resolv.conf").write_text(
            f"nameserver 127.0.0.1\n{'search ' + search if search else ''}\noptions ndots:5\n")
        bind("/dev", f"{root}/dev", readonly=False)
        os.makedirs(f"{root}/proc")
        try:
            mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            bind("/proc", f"{root}/proc", readonly=False)  # a container that hides parts of /proc
        for source, target, readonly in spec["mounts"]:
            bind(source, root + target, readonly=readonly)
        if spec.get("readOnlyRootFilesystem"):
            mount("none", root, None, MS_REMOUNT | MS_NOSUID | MS_RDONLY)
        return root

    async def run(self, name: str, spec: dict) -> int:
        await self.stop(name)
        root = self.roots[name] = self.build_root(name, spec)
        user = spec.get("user") if self.real_root else None
        workdir = spec.get("workingDir") or "/"

        def enter() -> None:
            os.setsid()
            os.chroot(root)
            os.chdir(workdir)
            if user:
                os.setgroups(user.get("groups") or [])
                os.setgid(user["gid"])
                os.setuid(user["uid"])

        log = open(spec["log"], "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec["argv"], env=spec["env"], stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=enter, close_fds=True)
        finally:
            log.close()
        self.procs[name] = proc
        return proc.pid

    async def stop(self, name: str, grace: float = 20.0) -> int | None:
        proc = self.procs.pop(name, None)
        code = None
        if proc is not None:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), grace)
                except asyncio.TimeoutError:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            code = proc.returncode
        root = self.roots.pop(name, None)
        if root:
            umount(root)
        return code

    def state(self, name: str) -> dict:
        proc = self.procs.get(name)
        if proc is None:
            return {"running": False, "exitCode": None}
        return {"running": proc.returncode is None, "exitCode": proc.returncode, "pid": proc.pid}


# ---------------------------------------------------------------------------
# Pipes
# ---------------------------------------------------------------------------

async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


async def splice(r1, w1, r2, w2) -> None:
    await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    for w in (w1, w2):
        w.close()


class Agent:
    def __init__(self, workdir: Path, real_root: bool) -> None:
        self.workdir = workdir
        self.dns = DNS()
        self.pods = Pods(workdir, real_root)
        self.stopping = asyncio.Event()

    async def api_forward(self, reader, writer) -> None:
        try:
            r2, w2 = await asyncio.open_unix_connection(str(self.workdir / "api.sock"))
        except OSError:
            writer.close()
            return
        await splice(reader, writer, r2, w2)

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                writer.close()
                return
            req = json.loads(line)
            op = req["op"]
            if op == "connect":
                try:
                    r2, w2 = await asyncio.open_connection("127.0.0.1", int(req["port"]))
                except OSError as exc:
                    writer.write((json.dumps({"ok": False, "error": str(exc)}) + "\n").encode())
                    await writer.drain()
                    writer.close()
                    return
                writer.write(b'{"ok": true}\n')
                await writer.drain()
                await splice(reader, writer, r2, w2)
                return
            if op == "run":
                reply = {"ok": True, "pid": await self.pods.run(req["name"], req["spec"])}
            elif op == "stop":
                reply = {"ok": True, "exitCode": await self.pods.stop(req["name"])}
            elif op == "state":
                reply = {"ok": True, **self.pods.state(req["name"])}
            elif op == "dns":
                self.dns.a = {k.lower(): v for k, v in req.get("a", {}).items()}
                self.dns.mx = {k.lower(): [tuple(x) for x in v] for k, v in req.get("mx", {}).items()}
                reply = {"ok": True}
            elif op == "listening":
                reply = {"ok": True, "ports": listening_ports()}
            elif op == "shutdown":
                self.stopping.set()
                reply = {"ok": True}
            else:
                reply = {"ok": False, "error": f"unknown op {op}"}
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        writer.write((json.dumps(reply) + "\n").encode())
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def main(self) -> None:
        loopback_up()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await loop.create_datagram_endpoint(lambda: self.dns, local_addr=("127.0.0.1", 53))
        api = await asyncio.start_server(self.api_forward, "127.0.0.1", 443)
        sock_path = self.workdir / "agent.sock"
        if sock_path.exists():
            sock_path.unlink()
        control = await asyncio.start_unix_server(self.control, str(sock_path))
        (self.workdir / "agent.ready").write_text(str(os.getpid()))
        await self.stopping.wait()
        control.close()
        api.close()
        for name in list(self.pods.procs):
            await self.pods.stop(name)


def listening_ports() -> list[int]:
    """TCP ports in LISTEN state in this network namespace (from /proc/net/tcp*)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    real_root = sys.argv[2] == "root"
    try:
        mount("none", "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    asyncio.run(Agent(workdir, real_root).main())
