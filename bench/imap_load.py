"""IMAP load: correo's mailstore against Debian's Dovecot, same load, same mail, same run.

Usage (from the repository root; Dovecot's part needs root, because its
master process hands the mail to the user ``nobody``)::

    python bench/imap_load.py                        # both profiles, correo and Dovecot, 3 x 20 s each
    python bench/imap_load.py --profile imaptest     # imaptest's default stress profile only
    python bench/imap_load.py --only correo --spy    # py-spy the mailstore: where its CPU goes
    python bench/imap_load.py --baseline main        # also run correo as of a git revision, same run
    python bench/imap_load.py --login-cache-seconds 0   # correo without its verified-login cache

Two loads, run alternately on each server (so that the shared machine's
background load hits both alike), each server fresh for each run:

- ``imaptest``: Dovecot's own stress tester (``../shared/imaptest``) in its
  default profile — 10 clients on one mailbox, each logging in, LIST,
  STATUS, SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT with imaptest's
  default probabilities, on the 500 messages of its ``make-mbox.py``; the
  commands are imaptest's totals.
- ``own``: each of ``--clients`` clients owns a mailbox preloaded (over IMAP
  APPEND, the same bytes on both servers) with ``--messages`` messages
  (plain text, HTML alternatives, 40 KB attachments), logs in and repeats
  ``--rounds`` times ``SELECT INBOX; UID FETCH 1:* (FLAGS); FETCH n
  (ENVELOPE BODYSTRUCTURE RFC822.SIZE); FETCH n (BODY.PEEK[]); UID STORE u
  +FLAGS (\\Seen); APPEND; UID STORE new +FLAGS.SILENT (\\Deleted); UID
  EXPUNGE new; NOOP`` before LOGOUT and a new connection.

Figures: commands per second (the same-run ratio is what counts: the
machine is shared), and the **CPU per command** of the server's processes
from /proc (user + system, reaped children included: Dovecot's per-login
``imap`` processes, its ``auth`` and ``imap-login``), which depends far
less on what else runs.  Medians of the runs are compared.  correo runs as
its pod does (``correo serve mailstore --config DIR``); Dovecot 2.3 from
Debian (``dovecot -F -c DIR/dovecot.conf``: Maildir, a passwd-file with the
same argon2id hashes, ``auth_cache_size = 10M``, loopback, a free port).

Where the mailstore's CPU goes (imaptest's profile; py-spy ``--gil`` and
/proc; Dec 2026, 2 shared cores, load average 6-14 from other work):

- Measured first: 4.6-5.3 ms of CPU per command; ~80 % of it the argon2id
  check (m=19 MiB, t=2: ~23 ms) on every LOGIN — imaptest logs in about
  once every 9 commands.  Dovecot pays the same: its ``auth_cache`` keeps
  passdb lookups, but for a hashed password it verifies the hash on every
  login (here its ``auth`` process is ~55 % of its CPU, the ``imap``
  process it starts per login most of the rest: 5.0-5.6 ms per command).
  Like for like (``--login-cache-seconds 0``, same run): correo 4.69 ms,
  correo before this work 4.80 ms, Dovecot 5.58 ms per command; 1.01x
  Dovecot's commands per second.
- Changed: a verified-login cache (:mod:`correo_server.logincache`, like
  Dovecot's auth_cache but keyed on user, stored hash and an HMAC of the
  password: a repeated login skips argon2 and its thread hop; a password
  change or suspension invalidates at once).  Gained: 0.68 ms of CPU per
  command (median of 3; 0.56 ms on a quieter machine), **7.4x Dovecot by CPU
  per command and 7.1x its commands per second** in the same run (649 vs 91
  commands/s, the machine loaded); the own profile, which logs in once per
  10 rounds: 0.67 vs 1.23 ms, 1.85x by CPU, 1.83x commands/s.
- Then, from the profile of what was left (same run against the cache
  alone: 0.74 -> 0.68 ms, 1.09x by CPU, 1.19x commands/s): ENVELOPE and
  BODYSTRUCTURE are computed once per message and kept (in memory, and in
  the folder's index, where a copy or move carries them: the first sync of
  a large folder reads the index, not the messages); the store's thread
  hop is a plain queue and the loop's own future instead of a
  ThreadPoolExecutor (its per-submit bookkeeping cost more than a flag
  change); the autologout timer is one sweeper per listener instead of a
  timer armed around every command read, and a flush waits for the client
  only when the socket's buffer is full; the capability list is ordered
  once; the command registry is built when the listener starts.
- What the CPU is now (imaptest, ~0.6 ms per command): FETCH 23 % (of which
  computing a new message's ENVELOPE/BODYSTRUCTURE 7 %, body sections 4 %),
  parsing commands 10 %, LOGIN 5 % (half of it the log line), STORE 5 %,
  APPEND 4 %, the selected folder's change report 3 %, and the event loop
  and sockets (accept, read, write, the worker threads' wake-ups) about a
  quarter — spread thin, no single hot spot left.
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

import proccpu

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


@dataclass
class Result:
    commands: int
    seconds: float
    cpu: float = 0.0  # CPU seconds of the server's processes during the load
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.commands if self.commands else float("nan")


async def run_own(port: int, users: list[str], seconds: float, rounds: int) -> Result:
    """This script's own load (see the docstring), on preloaded mailboxes."""
    extra = make_messages(1, seed=99)[0]
    fig = Figures()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(worker(port, u, rounds, deadline, fig, i, extra) for i, u in enumerate(users)))
    elapsed = time.monotonic() - started
    lat = sorted(fig.latencies)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
    return Result(fig.commands, elapsed, detail=f"latency p50 {p(0.5):.1f} ms, p90 {p(0.9):.1f} ms, "
                                                f"p99 {p(0.99):.1f} ms; errors {fig.errors}")


IMAPTEST_NAMES = {"Logi": "LOGIN", "List": "LIST", "Stat": "STATUS", "Sele": "SELECT", "Fetc": "FETCH",
                  "Fet2": "FETCH2", "Stor": "STORE", "Dele": "DELETE", "Expu": "EXPUNGE", "Appe": "APPEND",
                  "Logo": "LOGOUT"}


def run_imaptest(imaptest: Path, port: int, user: str, mbox: Path, seconds: float) -> Result:
    """imaptest's default stress profile (10 clients on one mailbox: login,
    list, status, select, fetch, store, expunge, append, logout, with its
    default probabilities) for ``seconds``; the commands are its totals."""
    proc = subprocess.run([str(imaptest), "host=127.0.0.1", f"port={port}", f"user={user}", f"pass={PASSWORD}",
                           f"mbox={mbox}", f"secs={int(seconds)}"], capture_output=True, text=True, errors="replace",
                          timeout=seconds + 120)
    lines = proc.stdout.splitlines()
    try:
        at = len(lines) - 1 - lines[::-1].index("Totals:")
        header = lines[at + 1].split()
        counts = next(l.split() for l in lines[at + 2:] if l.strip() and l.split()[0].isdigit())
    except (ValueError, StopIteration, IndexError):
        raise RuntimeError(f"imaptest gave no totals (exit {proc.returncode}): {proc.stdout[-500:]} "
                           f"{proc.stderr[-500:]}") from None
    per = {IMAPTEST_NAMES.get(h, h): int(c) for h, c in zip(header, counts)}
    return Result(sum(per.values()), seconds, detail=" ".join(f"{k} {v}" for k, v in per.items()))


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


CORREO_AUTH: dict = {}  # AuthSettings overrides of this checkout's correo (--login-cache-seconds)


def start_correo(base: Path, users: list[str], src: Path | None = None) -> tuple[subprocess.Popen, int]:
    """``correo serve mailstore``; ``src``: another checkout of correo to run
    instead of this one (``--baseline``)."""
    from correo_server import config as configmod
    from correo_server import directory as directorymod
    from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig
    from correo_server.directory import MailboxEntry

    port = free_port()
    local = Listen("127.0.0.1", 0)
    cfg = ServerConfig(
        name="bench", hostname="mail.example.com", domains=(Domain(DOMAIN),), log_format="json",
        auth=AuthSettings(failure_delay_seconds=0.01, **(CORREO_AUTH if src is None else {})),
        mailstore=MailstoreConfig(imap=Listen("127.0.0.1", port), imaps=local, pop3=local, pop3s=local,
                                  lmtp=local, http=local, data_dir=str(base / "mail"), pop3_enabled=False,
                                  max_connections_per_client=10_000, max_connections=10_000,
                                  min_free_bytes=0))
    conf = base / "config"
    conf.mkdir()
    # only what differs from the defaults, so that another version (--baseline) reads it too
    full = configmod.to_dict(cfg)
    plain = configmod.to_dict(ServerConfig(name=cfg.name, hostname=cfg.hostname, domains=cfg.domains))

    def differing(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: differing(v, b.get(k)) for k, v in a.items() if v != b.get(k)}
        return a

    kept = {k: full[k] for k in ("version", "name", "hostname", "domains")}
    (conf / configmod.CONFIG_FILE).write_text(configmod.yaml_dump({**kept, **differing(full, plain)}))
    h = password_hash()
    entries = [MailboxEntry(u, name=u.split("@")[0], password_hash=h, quota_bytes=10 << 30) for u in users]
    (conf / configmod.DIRECTORY_FILE).write_text(directorymod.dump(entries))
    log = open(base / "correo.log", "wb")
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src / 'server'}:{src / 'operator'}"
    proc = subprocess.Popen([sys.executable, "-c", "from correo_operator.cli import main; main()", "serve",
                             "mailstore", "--config", str(conf), "--log-format", "json"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
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
        auth_cache_size = 10M
        auth_cache_ttl = 1 hour
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


def find_imaptest() -> Path | None:
    """``../shared/imaptest/imaptest`` beside the clone (or beside the main
    checkout, from a git worktree)."""
    root = Path(__file__).resolve().parents[1]
    tops = [root]
    try:
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        tops.append((root / common).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    for top in tops:
        if (top.parent / "shared" / "imaptest" / "imaptest").exists():
            return top.parent / "shared" / "imaptest" / "imaptest"
    return None


def start_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--gil",
                             "--duration", str(int(seconds)), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_spy(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) stacks."""
    selfs: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";") if f]
        if frames:
            selfs[frames[-1]] = selfs.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "(no samples)"
    out = [f"{total} samples (GIL held); inclusive share (self share), the {top} largest:"]
    for name, n in sorted(incl.items(), key=lambda x: -x[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}%  ({100 * selfs.get(name, 0) / total:4.1f}%)  {name}")
    out.append("largest self shares:")
    for name, n in sorted(selfs.items(), key=lambda x: -x[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=("imaptest", "own", "both"), default="both",
                    help="imaptest's default stress profile, this script's own load, or both (default)")
    ap.add_argument("--clients", type=int, default=20, help="clients of the own load (imaptest: its default 10)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--messages", type=int, default=200, help="messages preloaded per mailbox (own load)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of commands per connection (own load)")
    ap.add_argument("--only", choices=("correo", "dovecot"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per server, alternating; medians are compared")
    ap.add_argument("--spy", action="store_true", help="py-spy the correo mailstore during each run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--login-cache-seconds", type=int, help="correo's auth.loginCacheSeconds (0: off)")
    ap.add_argument("--baseline", metavar="GIT_REV",
                    help="also run correo as of this git revision (\"correo@REV\"), to measure a change in the same run")
    args = ap.parse_args()
    if args.login_cache_seconds is not None:
        CORREO_AUTH["login_cache_seconds"] = args.login_cache_seconds

    profiles = ["imaptest", "own"] if args.profile == "both" else [args.profile]
    imaptest = find_imaptest()
    if "imaptest" in profiles and imaptest is None:
        print("imaptest: skipped (needs ../shared/imaptest beside the clone)")
        profiles.remove("imaptest")
    names = [n for n in ("correo", "dovecot") if not args.only or args.only == n]
    sources: dict[str, Path | None] = {"correo": None}
    work = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    os.chmod(work, 0o755)  # Dovecot's processes run as nobody
    if args.baseline:
        src = work / "baseline"
        src.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=Path(__file__).resolve().parents[1],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        names.insert(1, f"correo@{args.baseline}")
        sources[names[1]] = src
    if "dovecot" in names and (shutil.which("dovecot") is None or os.geteuid() != 0):
        print("dovecot: skipped (needs Debian's dovecot-imapd, and root)")
        names.remove("dovecot")
    mbox = work / "imaptest.mbox"
    if "imaptest" in profiles:
        subprocess.run([sys.executable, str(imaptest.parent / "make-mbox.py"), str(mbox)], check=True,
                       stdout=subprocess.DEVNULL)
    own_users = [f"bench{i}@{DOMAIN}" for i in range(args.clients)]
    messages = make_messages(args.messages)
    results: dict[tuple[str, str], list[Result]] = {(p, n): [] for p in profiles for n in names}
    for run in range(args.repeat):  # alternate, so that background load hits both alike
        for profile in profiles:
            users = [f"bench0@{DOMAIN}"] if profile == "imaptest" else own_users
            for name in names:
                base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
                if name.startswith("correo"):
                    proc, port = start_correo(base, users, sources[name])
                else:
                    proc, port = start_dovecot(base, users)
                spy = None
                try:
                    await wait_port(port, proc, name)
                    if profile == "own":
                        await asyncio.gather(*(preload(port, u, messages) for u in users))
                    cpu0, before = proccpu.tree_cpu(proc.pid)
                    if args.spy and name.startswith("correo"):
                        spy = start_spy(proc.pid, args.seconds, work / f"spy-{profile}-{run}.txt")
                    if profile == "imaptest":
                        result = await asyncio.to_thread(run_imaptest, imaptest, port, users[0], mbox, args.seconds)
                    else:
                        result = await run_own(port, users, args.seconds, args.rounds)
                    cpu1, by_name = proccpu.tree_cpu(proc.pid)
                    result.cpu = cpu1 - cpu0
                    if name == "dovecot":  # which of its processes (reaped ones count in their parent)
                        result.detail += "; CPU by process: " + ", ".join(
                            f"{n} {t - before.get(n, 0.0):.2f} s" for n, t in sorted(by_name.items(), key=lambda x: -x[1])[:5])
                    results[(profile, name)].append(result)
                    print(f"{profile:8} {name:14} run {run + 1}: {result.commands:6,} commands in "
                          f"{result.seconds:.1f} s = {result.rate:7,.0f}/s; server CPU {result.cpu:6.2f} s = "
                          f"{result.cpu_ms:.3f} ms/command  ({result.detail})", flush=True)
                finally:
                    if spy is not None:
                        spy.wait(timeout=args.seconds + 60)
                    stop(proc)
                    if not args.keep:
                        shutil.rmtree(base, ignore_errors=True)
                    else:
                        print(f"{name}: files kept in {base}")
    summary = {}
    for profile in profiles:
        print(f"\n{profile} profile: medians of {args.repeat} run(s)")
        med = {}
        for name in names:
            rs = results[(profile, name)]
            if not rs:
                continue
            med[name] = (statistics.median(r.rate for r in rs), statistics.median(r.cpu_ms for r in rs))
            print(f"  {name:14}: {med[name][0]:8,.0f} commands/s   {med[name][1]:.3f} ms CPU per command")
        for other in [n for n in med if n != "correo"]:
            if med[other][0] and med.get("correo", (0, 0))[1]:
                print(f"  correo/{other}: {med['correo'][0] / med[other][0]:.2f}x commands/s (same run, shared "
                      f"machine); {med[other][1] / med['correo'][1]:.2f}x by CPU per command")
        summary[profile] = {n: {"commands_per_second": m[0], "cpu_ms_per_command": m[1]} for n, m in med.items()}
    if args.spy:
        for path in sorted(work.glob("spy-*.txt")):
            print(f"\n{path.name}:\n{summarise_spy(path)}")
    print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
