"""COMPRESS=DEFLATE (RFC 4978): the RFC's exchange with a client that
deflates and inflates (zlib, raw DEFLATE as the RFC says), what the
compression buys on a FETCH of whole messages, the refusals, a corrupt
stream that ends only its own connection — and mbsync, a real client that
turns compression on by itself when the server offers it."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import zlib

import pytest

from imaptest_support import ALICE, RawClient
from test_imap_clients import _local_messages, _mbsync_config, _plain

LETTER = (b"From: Jones <jones@example.org>\r\nTo: alice@example.com\r\nSubject: minutes\r\n\r\n"
          + b"The committee met and agreed on the budget for the next quarter.\r\n" * 200)


class DeflateClient:
    """A client after COMPRESS DEFLATE: raw DEFLATE both ways."""

    def __init__(self, sock: socket.socket, early: bytes = b"") -> None:
        self.sock = sock
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.buf = self.inflate.decompress(early)
        self.wire_in = len(early)
        self.n = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    def response(self, tag: bytes) -> bytes:
        """Inflated lines up to the one that starts with ``tag`` (``+`` for a continuation)."""
        while not re.search(rb"(^|\r\n)" + re.escape(tag) + rb" [^\r\n]*\r\n$", self.buf):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.wire_in += len(chunk)
            self.buf += self.inflate.decompress(chunk)
        out, self.buf = self.buf, b""
        return out

    def cmd(self, text: str) -> bytes:
        self.n += 1
        tag = b"z%d" % self.n
        self.send(tag + b" " + text.encode() + b"\r\n")
        return self.response(tag)


def compress(raw: RawClient) -> DeflateClient:
    assert raw.cmd("COMPRESS DEFLATE")[-1] == b"t%d OK DEFLATE active\r\n" % raw.n
    return DeflateClient(raw.sock, raw.buf)


def test_offered_after_login_and_the_session_goes_on_compressed(imap):
    raw = RawClient(imap.port)
    assert b"COMPRESS" not in raw.cmd("CAPABILITY")[0]
    assert raw.cmd("COMPRESS DEFLATE")[-1].startswith(b"t2 BAD ")  # not before login
    raw.login()
    assert b" COMPRESS=DEFLATE" in raw.cmd("CAPABILITY")[0]
    imap.deliver(ALICE, LETTER)
    z = compress(raw)
    assert b"* 1 EXISTS\r\n" in z.cmd("SELECT INBOX") and z.cmd("NOOP").endswith(b"z2 OK NOOP completed.\r\n")
    before = z.wire_in
    fetched = z.cmd("FETCH 1 BODY.PEEK[]")
    assert LETTER in fetched
    assert z.wire_in - before < len(LETTER) / 5  # the repetitive letter travels in a fraction of its size
    # a literal sent compressed, with the server's "+" in between
    data = b"Subject: up\r\n\r\nup\r\n"
    z.n += 1
    z.send(b"z%d APPEND INBOX {%d}\r\n" % (z.n, len(data)))
    assert z.response(b"+").startswith(b"+ ")
    z.send(data + b"\r\n")
    assert b"z%d OK [APPENDUID " % z.n in z.response(b"z%d" % z.n)
    assert z.cmd("COMPRESS DEFLATE").endswith(b"z%d NO [COMPRESSIONACTIVE] DEFLATE is active already\r\n" % z.n)
    assert z.cmd("LOGOUT").startswith(b"* BYE")
    raw.close()


def test_only_deflate(imap, raw):
    assert raw.cmd("COMPRESS GZIP")[-1].startswith(b"t%d BAD Unknown compression mechanism GZIP" % raw.n)
    assert raw.cmd("COMPRESS")[-1].startswith(b"t%d BAD " % raw.n)
    assert raw.cmd("NOOP")[-1] == b"t%d OK NOOP completed.\r\n" % raw.n  # still uncompressed


def test_commands_pipelined_behind_compress_are_read_inflated(imap):
    """A client may send compressed commands right behind COMPRESS, before
    the OK arrives: they are not mistaken for plain text."""
    raw = RawClient(imap.port)
    raw.login()
    out = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw.send(b"c1 COMPRESS DEFLATE\r\n" + out.compress(b"c2 NOOP\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
    assert raw.readline() == b"c1 OK DEFLATE active\r\n"
    z = DeflateClient(raw.sock, raw.buf)
    assert z.response(b"c2").endswith(b"c2 OK NOOP completed.\r\n")
    raw.close()


def test_a_corrupt_stream_ends_that_connection_only(imap):
    raw = RawClient(imap.port)
    raw.login()
    compress(raw)
    raw.send(b"\xff\xff\xff\xff this is not deflate \x00\x01")
    raw.sock.settimeout(10)
    while raw.sock.recv(4096):
        pass  # closed by the server
    other = RawClient(imap.port)
    other.login()
    assert other.cmd("NOOP")[-1].startswith(b"t2 OK")
    other.close()


def test_a_small_input_that_inflates_hugely_is_held_to_the_line_limit(imap):
    """1 MB of one byte deflates to about a kilobyte: the server inflates it
    a chunk at a time and answers the over-long line BAD, never holding it."""
    raw = RawClient(imap.port)
    raw.login()
    z = compress(raw)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    z.sock.sendall(bomb.compress(b"x1 NOOP " + b"a" * (1 << 20) + b"\r\nx2 NOOP\r\n") + bomb.flush(zlib.Z_SYNC_FLUSH))
    z.out = bomb
    reply = z.response(b"x2")
    assert b"BAD Command line too long." in reply and reply.endswith(b"x2 OK NOOP completed.\r\n")
    raw.close()


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed (scripts/setup-test-env installs it)")
def test_mbsync_negotiates_compression_and_syncs(imap, tmp_path):
    for i in range(3):
        imap.deliver(ALICE, LETTER.replace(b"minutes", b"minutes %d" % i))
    conf = _mbsync_config(tmp_path, imap.port)
    result = subprocess.run(["mbsync", "-Dn", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "COMPRESS DEFLATE" in result.stdout + result.stderr
    assert _local_messages(tmp_path / "local" / "INBOX") == sorted(
        _plain(LETTER.replace(b"minutes", b"minutes %d" % i)) for i in range(3))
