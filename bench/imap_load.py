"""IMAP load: correo's mailstore against Debian's Dovecot, same load, same mail.

Usage (from the repository root; Dovecot's part needs root, because its
master process hands the mail to the user ``nobody``)::

    python bench/imap_load.py                       # 20 clients, 3 x 15 s per server
    python bench/imap_load.py --clients 50 --seconds 30 --messages 500
    python bench/imap_load.py --only correo         # skip Dovecot

Each of N concurrent clients owns a mailbox preloaded (over IMAP APPEND, the
same bytes on both servers) with M messages: plain text, HTML alternatives
and messages with a 40 KB attachment.  A client connects, logs in (argon2id
on both servers: the same hashes), and then repeats ``--rounds`` times::

    SELECT INBOX; UID FETCH 1:* (FLAGS); FETCH n (ENVELOPE BODYSTRUCTURE RFC822.SIZE);
    FETCH n (BODY.PEEK[]); UID STORE u +FLAGS (\\Seen); APPEND INBOX {...};
    UID STORE new +FLAGS.SILENT (\\Deleted); UID EXPUNGE new; NOOP

before ``LOGOUT`` and a new connection.  The script prints, per server,
commands per second (tagged replies received), latency percentiles, and the
ratio correo / Dovecot.

correo runs as its pod does: ``correo serve mailstore --config DIR`` in a
child process (configuration written with correo's own ``config.dump`` and
``directory.dump``).  Dovecot runs as ``dovecot -F -c DIR/dovecot.conf``
(Maildir under a temporary folder, a passwd-file with the same argon2id
hashes, listening on 127.0.0.1 on a free port) and is stopped by its PID.
The load generator is one asyncio process; both servers share the machine
with it, so the figures compare the servers under the same conditions, not
their peak on dedicated hardware.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "bench-password"
DOMAIN = "example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------
# The mail
# ---------------------------------------------------------------------------

def make_messages(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    words = ("invoice meeting report schedule lunch budget review draft release notes travel "
             "quarterly plan café naïve résumé").split()
    out = []
    for i in range(count):
        subject = " ".join(rng.choice(words) for _ in range(4))
        text = "\r\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(rng.randrange(5, 40)))
        head = (f"From: Sender {i} <sender{i % 17}@example.org>\r\nTo: user@{DOMAIN}\r\n"
                f"Subject: {subject}\r\nDate: Mon, 13 May 2024 10:{i % 60:02d}:00 +0000\r\n"
                f"Message-ID: <m{i}@example.org>\r\nMIME-Version: 1.0\r\n")
        kind = i % 3
        if kind == 0:
            msg = head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
        elif kind == 1:
            msg = (head + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
                   "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--b1\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n\r\n<p>" + text + "</p>\r\n--b1--\r\n")
        else:
            blob = base64.encodebytes(rng.randbytes(30_000)).decode().replace("\n", "\r\n")
            msg = (head + 'Content-Type: multipart/mixed; boundary="b2"\r\n\r\n--b2\r\n'
                   "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--b2\r\n"
                   'Content-Type: application/pdf; name="doc.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
                   'Content-Disposition: attachment; filename="doc.pdf"\r\n\r\n' + blob + "--b2--\r\n")
        out.append(msg.encode("utf-8"))
    return out


# ---------------------------------------------------------------------------
# A small, fast asyncio IMAP client
# ---------------------------------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class Client:
    """Reads whole responses from a buffer (skipping literals by their
    length) so that the load generator spends little CPU per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.n = 0
        self.buf = bytearray()

    @classmethod
    async def connect(cls, port: int) -> "Client":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        client = cls(reader, writer)
        await client._line()  # greeting
        return client

    async def _more(self) -> None:
        data = await self.r.read(1 << 18)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    async def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            await self._more()
        line = bytes(self.buf[:i + 2])
        del self.buf[:i + 2]
        return line

    async def _response(self, tag: bytes) -> list[bytes]:
        """The response up to the tagged line, split at CRLF (literals are
        skipped by their length, so their content never ends a line)."""
        marker = tag + b" "
        line_start = scan = 0
        while True:
            i = self.buf.find(b"\r\n", scan)
            if i < 0:
                await self._more()
                continue
            m = _LITERAL.search(self.buf, max(line_start, i - 24), i + 2)
            if m is not None:  # the line goes on after the literal's octets
                scan = i + 2 + int(m.group(1))
                while len(self.buf) < scan:
                    await self._more()
                continue
            if self.buf.startswith(marker, line_start):
                text = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                status = text[line_start + len(marker):line_start + len(marker) + 2]
                if status != b"OK":
                    raise RuntimeError(text[line_start:].decode(errors="replace").strip())
                return text.split(b"\r\n")
            line_start = scan = i + 2

    async def cmd(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        if literal is None:
            self.w.write(tag + b" " + text + b"\r\n")
        else:
            self.w.write(tag + b" " + text + b" {%d}\r\n" % len(literal))
            await self.w.drain()
            cont = await self._line()
            if not cont.startswith(b"+"):
                raise RuntimeError(cont.decode(errors="replace"))
            self.w.write(literal + b"\r\n")
        await self.w.drain()
        return await self._response(tag)

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass


@dataclass
class Figures:
    commands: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def timed(fig: Figures, coro):
    started = time.perf_counter()
    result = await coro
    fig.latencies.append(time.perf_counter() - started)
    fig.commands += 1
    return result


async def preload(port: int, user: str, messages: list[bytes]) -> None:
    c = await Client.connect(port)
    await c.cmd(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    for msg in messages:
        await c.cmd(b"APPEND INBOX", msg)
    await c.cmd(b"LOGOUT")
    await c.close()


async def worker(port: int, user: str, rounds: int, deadline: float, fig: Figures, seed: int,
                 extra: bytes) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            c = await Client.connect(port)
            await timed(fig, c.cmd(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode())))
            for _ in range(rounds):
                if time.monotonic() >= deadline:
                    break
                lines = await timed(fig, c.cmd(b"SELECT INBOX"))
                exists = next(int(l.split()[1]) for l in lines if l.endswith(b" EXISTS"))
                flags = await timed(fig, c.cmd(b"UID FETCH 1:* (FLAGS)"))
                uids = [int(u) for u in re.findall(rb"UID (\d+)", b"\n".join(flags))]
                n = rng.randrange(1, exists + 1)
                await timed(fig, c.cmd(b"FETCH %d (ENVELOPE BODYSTRUCTURE RFC822.SIZE)" % n))
                await timed(fig, c.cmd(b"FETCH %d (BODY.PEEK[])" % n))
                await timed(fig, c.cmd(b"UID STORE %d +FLAGS (\\Seen)" % rng.choice(uids)))
                appended = await timed(fig, c.cmd(b"APPEND INBOX", extra))
                m = re.search(rb"APPENDUID \d+ (\d+)", appended[-2])
                if m:
                    new = int(m.group(1))
                    await timed(fig, c.cmd(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % new))
                    await timed(fig, c.cmd(b"UID EXPUNGE %d" % new))
                await timed(fig, c.cmd(b"NOOP"))
            await timed(fig, c.cmd(b"LOGOUT"))
            await c.close()
        except (RuntimeError, ConnectionError, OSError, StopIteration) as exc:
            fig.errors += 1
            if fig.errors <= 3:
                print(f"  client error: {exc}", file=sys.stderr)
            await asyncio.sleep(0.05)


async def run_load(name: str, port: int, users: list[str], messages: list[bytes], seconds: float,
                   rounds: int) -> Figures:
    print(f"{name}: preloading {len(messages)} messages into {len(users)} mailboxes ...", flush=True)
    await asyncio.gather(*(preload(port, u, messages) for u in users))
    extra = make_messages(1, seed=99)[0]
    fig = Figures()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(worker(port, u, rounds, deadline, fig, i, extra) for i, u in enumerate(users)))
    elapsed = time.monotonic() - started
    lat = sorted(fig.latencies)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
    rate = fig.commands / elapsed
    print(f"{name}: {len(users)} clients, {fig.commands} commands in {elapsed:.1f} s = {rate:,.0f} commands/s "
          f"(latency p50 {p(0.5):.1f} ms, p90 {p(0.9):.1f} ms, p99 {p(0.99):.1f} ms; errors {fig.errors})",
          flush=True)
    fig.rate = rate  # type: ignore[attr-defined]
    return fig


# ---------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------

def password_hash() -> str:
    from correo_server import passwords
    return passwords.hash_password(PASSWORD, passwords.stable_salt("bench"))


async def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start")
            await asyncio.sleep(0.1)


def start_correo(base: Path, users: list[str]) -> tuple[subprocess.Popen, int]:
    from correo_server import config as configmod
    from correo_server import directory as directorymod
    from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig
    from correo_server.directory import MailboxEntry

    port = free_port()
    local = Listen("127.0.0.1", 0)
    cfg = ServerConfig(
        name="bench", hostname="mail.example.com", domains=(Domain(DOMAIN),), log_format="json",
        auth=AuthSettings(failure_delay_seconds=0.01),
        mailstore=MailstoreConfig(imap=Listen("127.0.0.1", port), imaps=local, pop3=local, pop3s=local,
                                  lmtp=local, http=local, data_dir=str(base / "mail"), pop3_enabled=False,
                                  max_connections_per_client=10_000, max_connections=10_000,
                                  min_free_bytes=0))
    conf = base / "config"
    conf.mkdir()
    (conf / configmod.CONFIG_FILE).write_text(configmod.dump(cfg))
    h = password_hash()
    entries = [MailboxEntry(u, name=u.split("@")[0], password_hash=h, quota_bytes=10 << 30) for u in users]
    (conf / configmod.DIRECTORY_FILE).write_text(directorymod.dump(entries))
    log = open(base / "correo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", "from correo_operator.cli import main; main()", "serve",
                             "mailstore", "--config", str(conf), "--log-format", "json"],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def start_dovecot(base: Path, users: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    os.chmod(base, 0o755)
    mail = base / "mail"
    mail.mkdir()
    shutil.chown(mail, "nobody", "nogroup")
    run = base / "run"
    run.mkdir()
    h = password_hash()
    passwd = base / "passwd"
    passwd.write_text("".join(f"{u}:{h}\n" for u in users))
    conf = base / "dovecot.conf"
    conf.write_text(textwrap.dedent(f"""\
        protocols = imap
        listen = 127.0.0.1
        base_dir = {run}
        state_dir = {run}
        ssl = no
        log_path = {base}/dovecot.log
        mail_location = maildir:{mail}/%u
        first_valid_uid = 1
        default_login_user = nobody
        default_internal_user = nobody
        auth_mechanisms = plain
        disable_plaintext_auth = no
        namespace inbox {{
          inbox = yes
          separator = /
        }}
        passdb {{
          driver = passwd-file
          args = {passwd}
        }}
        userdb {{
          driver = static
          args = uid=nobody gid=nogroup home={mail}/%u
        }}
        service imap-login {{
          inet_listener imap {{
            address = 127.0.0.1
            port = {port}
          }}
          process_min_avail = 2
        }}
        service imap {{
          process_limit = 2000
        }}
        service anvil {{
          client_limit = 4000
        }}
        default_client_limit = 4000
        mail_max_userip_connections = 10000
        """))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(base / "dovecot.stderr", "wb"))
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--messages", type=int, default=200, help="messages preloaded per mailbox")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of commands per connection")
    ap.add_argument("--only", choices=("correo", "dovecot"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per server, alternating; medians are compared")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = ap.parse_args()

    users = [f"bench{i}@{DOMAIN}" for i in range(args.clients)]
    messages = make_messages(args.messages)
    print(f"mail: {len(messages)} messages per mailbox, {sum(map(len, messages)) // 1024} KiB", flush=True)
    names = [n for n in ("correo", "dovecot") if not args.only or args.only == n]
    if "dovecot" in names and (shutil.which("dovecot") is None or os.geteuid() != 0):
        print("dovecot: skipped (needs Debian's dovecot-imapd, and root)")
        names.remove("dovecot")
    results: dict[str, list[float]] = {n: [] for n in names}
    for run in range(args.repeat):  # alternate, so that background load hits both alike
        for name in names:
            base = Path(tempfile.mkdtemp(prefix=f"imap-bench-{name}-"))
            proc, port = (start_correo if name == "correo" else start_dovecot)(base, users)
            try:
                await wait_port(port, proc, name)
                fig = await run_load(name, port, users, messages, args.seconds, args.rounds)
                results[name].append(fig.rate)  # type: ignore[attr-defined]
            finally:
                stop(proc)
                if not args.keep:
                    shutil.rmtree(base, ignore_errors=True)
                else:
                    print(f"{name}: files kept in {base}")
    medians = {n: statistics.median(r) for n, r in results.items() if r}
    for name, value in medians.items():
        print(f"{name}: median {value:,.0f} commands/s over {len(results[name])} run(s)")
    if len(medians) == 2:
        print(f"ratio correo/dovecot: {medians['correo'] / medians['dovecot']:.2f}")
    print(json.dumps({"clients": args.clients, "seconds": args.seconds, "runs": results,
                      "median_commands_per_second": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
