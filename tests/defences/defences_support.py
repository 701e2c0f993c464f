"""Test pieces for the defences: a loopback DNS server (dnslib) that serves
TXT, A, AAAA, MX and PTR records, can fail (SERVFAIL) or stay silent (the
resolver times out) per name; DKIM keys and signing with dkimpy; and a real
rspamd started with its own minimal configuration under a temporary folder.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError
from dnslib.server import BaseResolver, DNSLogger, DNSServer

# ---------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------


def _txt_strings(text: str | bytes) -> list[bytes]:
    data = text.encode() if isinstance(text, str) else text
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


class Zone(BaseResolver):
    """Answers from a dict; unknown names are NXDOMAIN; some names SERVFAIL
    or are never answered."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[RR]] = defaultdict(list)
        self.names: set[str] = set()
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.soas: dict[str, RR] = {}  # zone apex -> the SOA record sent with its negative answers
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.port = 0

    def _add(self, name: str, qtype: str, rdata) -> None:
        name = name.rstrip(".").lower()
        with self.lock:
            self.names.add(name)
            self.records[(name, qtype)].append(RR(name, getattr(QTYPE, qtype), rdata=rdata, ttl=60))

    def txt(self, name: str, *texts: str | bytes) -> None:
        for text in texts:
            self._add(name, "TXT", TXT(_txt_strings(text)))

    def a(self, name: str, *addresses: str) -> None:
        for addr in addresses:
            self._add(name, "AAAA" if ":" in addr else "A", AAAA(addr) if ":" in addr else A(addr))

    def mx(self, name: str, *entries: tuple[int, str]) -> None:
        for pref, host in entries:
            self._add(name, "MX", MX(host, pref))

    def ptr(self, name: str, target: str) -> None:
        self._add(name, "PTR", PTR(target))

    def exists(self, name: str) -> None:
        with self.lock:
            self.names.add(name.rstrip(".").lower())

    def fail(self, name: str) -> None:
        with self.lock:
            self.servfail.add(name.rstrip(".").lower())

    def hang(self, name: str) -> None:
        with self.lock:
            self.silent.add(name.rstrip(".").lower())

    def soa(self, apex: str, *, ttl: int, minimum: int) -> None:
        """Negative answers for names under ``apex`` carry its SOA record (RFC 2308)."""
        apex = apex.rstrip(".").lower()
        with self.lock:
            self.names.add(apex)
            self.soas[apex] = RR(apex, QTYPE.SOA, ttl=ttl, rdata=SOA(
                f"ns.{apex}", f"hostmaster.{apex}", (1, 3600, 600, 86400, minimum)))

    def _soa_for(self, qname: str) -> RR | None:
        labels = qname.split(".")
        for i in range(len(labels)):
            found = self.soas.get(".".join(labels[i:]))
            if found is not None:
                return found
        return None

    def clear(self) -> None:
        with self.lock:
            self.soas.clear()
            self.records.clear()
            self.names.clear()
            self.servfail.clear()
            self.silent.clear()
            self.queries.clear()

    def asked(self, name: str, qtype: str | None = None) -> int:
        name = name.rstrip(".").lower()
        with self.lock:
            return sum(1 for n, t in self.queries if n == name and (qtype is None or t == qtype))

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
            if qname in self.silent:
                raise DNSError("silent: no answer")
            if qname in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            soa = self._soa_for(qname)
            if qname not in self.names:
                reply.header.rcode = RCODE.NXDOMAIN
                if soa is not None:
                    reply.add_auth(soa)
                return reply
            for rr in self.records.get((qname, qtype), []):
                reply.add_answer(rr)
            if not reply.rr and soa is not None:
                reply.add_auth(soa)
        return reply


def start_dns(zone: Zone) -> DNSServer:
    server = DNSServer(zone, port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    zone.port = server.server.server_address[1]
    return server


# ---------------------------------------------------------------------------
# DKIM
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DkimKey:
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    private: bytes
    record: str  # the TXT record to publish

    def sign(self, message: bytes, domain: str, selector: str, **kwargs) -> bytes:
        """``message`` with a DKIM-Signature on top."""
        signature = dkim.sign(message, selector.encode(), domain.encode(), self.private,
                              signature_algorithm=self.algorithm.encode(), linesep=b"\r\n", **kwargs)
        return signature + message


def rsa_key(bits: int = 2048) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return DkimKey("rsa-sha256", private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())


def ed25519_key() -> DkimKey:
    key = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(key))
    public = key.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return DkimKey("ed25519-sha256", private, "v=DKIM1; k=ed25519; p=" + public)


def message(sender: str = "alice@sender.example", to: str = "bob@example.com", subject: str = "Hello",
            body: str = "Hello Bob.\r\n", extra: str = "") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash((sender, subject, body)))}@test>\r\n"
            f"{extra}MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}").encode()


# ---------------------------------------------------------------------------
# rspamd
# ---------------------------------------------------------------------------

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_ADD_HEADER = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_REWRITE_SUBJECT = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

# A prefilter that returns the action a test asks for in a header (for the
# actions no test pattern produces), and a virus symbol for the EICAR test
# string (no ClamAV signatures can be downloaded here; the symbol is named the
# way rspamd's antivirus module names them).
_TEST_LUA = r"""
rspamd_config:register_symbol({
  name = 'CORREO_TEST_ACTION',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local want = task:get_header('X-Correo-Test-Action')
    if want then task:set_pre_result(want, 'correo test asked for ' .. want) end
  end,
})
rspamd_config:register_symbol({
  name = 'EICAR_TEST_VIRUS',
  score = 0.0,
  callback = function(task)
    for _, part in ipairs(task:get_parts()) do
      local content = part:get_content()
      if content and tostring(content):find('EICAR-STANDARD-ANTIVIRUS-TEST-FILE', 1, true) then
        return true
      end
    end
    return false
  end,
})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rspamd:
    process: subprocess.Popen
    folder: Path
    normal_port: int
    controller_port: int
    password: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.normal_port}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def log(self) -> str:
        try:
            return (self.folder / "rspamd.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def rspamd_binary() -> str | None:
    return shutil.which("rspamd")


def start_rspamd(folder: Path, dns_port: int, *, timeout: float = 60.0) -> Rspamd:
    """rspamd with a configuration of its own: no modules but the test rules,
    loopback workers, DNS pointing at the test's loopback server, the test
    patterns (GTUBE and its add-header / rewrite-subject variants) on."""
    folder.mkdir(parents=True, exist_ok=True)
    normal, controller = free_port(), free_port()
    password = "rspamd-test-password"
    (folder / "tld.dat").write_text("com\nnet\norg\nexample\ntest\n")
    (folder / "correo-test.lua").write_text(_TEST_LUA)
    (folder / "rspamd.conf").write_text(f"""
options {{
  pidfile = "{folder}/rspamd.pid";
  filters = "";
  dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}
  enable_test_patterns = true;
  local_addrs = [];
  cache_file = "{folder}/symbols.cache";
  dynamic_conf = "{folder}/rspamd_dynamic";
  history_file = "{folder}/rspamd.history";
  hs_cache_dir = "{folder}/";
  control_socket = "{folder}/rspamd.sock mode=0600";
  stats_file = "{folder}/stats.ucl";
  url_tld = "{folder}/tld.dat";
  tempdir = "{folder}";
}}
logging {{ type = "file"; filename = "{folder}/rspamd.log"; level = "notice"; }}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
lua = "{folder}/correo-test.lua";
worker "normal" {{ bind_socket = "127.0.0.1:{normal}"; count = 1; }}
worker "controller" {{ bind_socket = "127.0.0.1:{controller}"; count = 1; password = "{password}";
  secure_ip = "192.0.2.1"; }}
""")
    args = [rspamd_binary() or "rspamd", "-c", str(folder / "rspamd.conf"), "-f", "-i"]
    if os.geteuid() == 0:
        args += ["-u", "root", "-g", "root"]
    out = open(folder / "stdout.log", "wb")
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    out.close()
    server = Rspamd(process, folder, normal, controller, password)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rspamd exited with {process.returncode}:\n{server.log()}\n"
                               f"{(folder / 'stdout.log').read_text(errors='replace')[-2000:]}")
        if _answers(normal) and _answers(controller):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"rspamd did not answer within {timeout} s:\n{server.log()}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return b"pong" in s.recv(1024)
    except OSError:
        return False
