"""Crash safety through IMAP: the server runs in a child process and is
SIGKILLed while clients APPEND (mid-literal, mid-write, between commands).
After a restart every acknowledged message is there with its UID, the index
agrees with the files, and the server keeps working."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from correo_server.mailstore import maildir
from correo_server.mailstore.index import INDEX_FILE, Index
from imaptest_support import ALICE, RawClient

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from imaptest_support import make_config, make_context, make_directory
    from correo_server import logs
    from correo_server.mailstore.store import Store
    from correo_server.mailstore.imap.server import serve_imap

    async def main():
        logs.setup("json", level="warning")
        cfg = make_config(Path(sys.argv[1]))
        directory = make_directory(cfg)
        store = Store.from_config(cfg, directory)
        ctx = make_context(cfg, directory, store)
        server = await serve_imap(ctx, cfg.mailstore.imap)
        port = server.sockets[0].getsockname()[1]
        Path(sys.argv[2]).write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(main())
""")


class Child:
    def __init__(self, base: Path) -> None:
        port_file = base / f"port-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(base), str(port_file), str(HERE)])
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the IMAP server child did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def appender(port: int, worker: int, acked: dict, stop: threading.Event) -> None:
    """APPEND messages of varied sizes until the connection dies; record
    (UID → body) for every tagged OK received."""
    rng = random.Random(worker)
    try:
        c = RawClient(port)
        c.login()
        i = 0
        while not stop.is_set():
            i += 1
            body = b"Subject: w%d m%d\r\n\r\n" % (worker, i) + bytes(rng.randrange(256) for _ in range(64)) \
                * rng.randrange(1, 400)
            if i % 3:
                lines = c.cmd(b"APPEND INBOX {%d+}\r\n" % len(body) + body)
            else:  # a synchronizing literal, sent in two halves
                c.n += 1
                tag = b"t%d" % c.n
                c.send(tag + b" APPEND INBOX (\\Seen) {%d}\r\n" % len(body))
                assert c.readline() == b"+ OK\r\n"
                c.send(body[: len(body) // 2])
                c.send(body[len(body) // 2:] + b"\r\n")
                lines = c.read_response(tag)
            last = lines[-1]
            if b"OK [APPENDUID" in last:
                uid = int(last.split(b"APPENDUID ")[1].split(b" ")[1].rstrip(b"]"))
                acked[uid] = body
    except (EOFError, OSError, AssertionError, IndexError):
        return


@pytest.mark.parametrize("kill_after", [0.4, 0.9, 1.5])
def test_sigkill_during_appends_loses_no_acknowledged_message(tmp_path, kill_after):
    child = Child(tmp_path)
    acked: dict[int, bytes] = {}
    stop = threading.Event()
    workers = [threading.Thread(target=appender, args=(child.port, w, acked, stop)) for w in range(3)]
    started = time.monotonic()
    for w in workers:
        w.start()
    # kill ``kill_after`` seconds in, but never before a first APPEND was
    # acknowledged (logins and the first write are slow on a loaded machine)
    while not acked and time.monotonic() - started < 30:
        time.sleep(0.01)
    time.sleep(max(0.0, kill_after - (time.monotonic() - started)))
    child.kill()
    stop.set()
    for w in workers:
        w.join(10)
    assert acked, "nothing was acknowledged before the kill"

    inbox_dir = tmp_path / "mail" / ALICE
    rows = Index(inbox_dir / INDEX_FILE).rows()  # readable after the crash (WAL recovery)
    assert len({r.uid for r in rows}) == len(rows)

    child = Child(tmp_path)  # restart: repair on open
    try:
        c = RawClient(child.port)
        c.login()
        c.cmd("SELECT INBOX")
        for uid, body in acked.items():
            lines = c.cmd(f"UID FETCH {uid} (BODY.PEEK[])")
            assert lines[0].endswith(b"BODY[] {%d}\r\n" % len(body) + body + b")\r\n"), uid
        assert c.cmd("APPEND INBOX {4+}\r\nabcd")[-1].split()[1] == b"OK"
        c.cmd("LOGOUT")
    finally:
        child.kill()
    rows = Index(inbox_dir / INDEX_FILE).rows()
    files = maildir.scan(inbox_dir)
    assert {r.base for r in rows} == set(files)  # the index and the files agree
    assert all(files[r.base] == r.path for r in rows)
    assert os.listdir(inbox_dir / "tmp") == []


def test_sigkill_mid_literal_leaves_nothing_behind(tmp_path):
    child = Child(tmp_path)
    c = RawClient(child.port)
    c.login()
    assert c.cmd("APPEND INBOX {5+}\r\nfirst")[-1].split()[1] == b"OK"
    c.send(b"x APPEND INBOX {500000+}\r\n" + b"y" * 250_000)  # half a literal, then the server dies
    time.sleep(0.2)
    child.kill()
    child = Child(tmp_path)
    try:
        c = RawClient(child.port)
        c.login()
        lines = c.cmd("SELECT INBOX")
        assert b"* 1 EXISTS\r\n" in lines
        assert c.cmd("FETCH 1 BODY.PEEK[]")[0] == b"* 1 FETCH (BODY[] {5}\r\nfirst)\r\n"
    finally:
        child.kill()
