"""Fuzzing harnesses: one function per parser that faces what a client (or
a YAML author) sends, each taking arbitrary bytes.

A harness returns normally for every input the parser handles as designed,
a refusal included (the parser's own error type: ``PathError``,
``BadCommand``, ``CommandError``, ``ParseError``, ``SieveError``, a
``Loaded`` with problems); anything else escaping it (``IndexError``,
``UnicodeDecodeError``, ``RecursionError``...) is a bug, which the fuzzer
reports with the input.  Each checks a property too where one is cheap
(what a parser accepts it can print again; the relay's reader never keeps
more than its size limit).

The same functions are run three ways (:mod:`tests.fuzz.test_fuzz`): over
the committed corpus (``corpus/<harness>/``, crashes found become files
there), over hypothesis-generated inputs, and under atheris for a few
seconds each when atheris is installed.  A longer run (README, "Fuzzing")::

    python tests/fuzz/run.py imap -max_total_time=600 tests/fuzz/corpus/imap
"""
from __future__ import annotations

import asyncio
import atexit
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


# -- SMTP: MAIL/RCPT paths and parameters, the DATA framing ------------------
def smtp_command(data: bytes) -> None:
    from correo_server.wire.paths import PathError, parse_params, parse_path, split_keyword

    text = data.decode("utf-8", "surrogateescape")
    for keyword in ("FROM:", "TO:"):
        arg = split_keyword(text, keyword)
        if arg is None:
            continue
        try:
            path, rest = parse_path(arg, allow_null=keyword == "FROM:")
            params = parse_params(rest)
        except PathError:
            continue
        assert isinstance(params, dict)
        if path is not None:
            assert "\r" not in str(path) and "\n" not in str(path)


def smtp_data(data: bytes) -> None:
    """The relay's message reader fed in arbitrary pieces: it never keeps
    more than its limit, it ends only at CRLF.CRLF, what it keeps has no
    bare CR or LF."""
    from correo_server.relay.data import MessageReader
    from correo_server.relay.connection import DataSink

    loop = asyncio.new_event_loop()
    try:
        reader = MessageReader(4096, 200, spool_over=512)
        sink = DataSink(reader, loop.create_future())
        cut = data[0] % 17 + 1 if data else 1
        rest = None
        for i in range(0, len(data), cut):
            rest = sink.feed(data[i:i + cut])
            if rest is not None:
                break
        if rest is not None:
            assert b"\r\n.\r\n" in b"\r\n" + data
            if reader.refusal() is None:
                content = reader.content()
                assert len(content) <= 4096
                assert content.count(b"\r") == content.count(b"\n") == content.count(b"\r\n")
        reader.close()
    finally:
        loop.close()


# -- IMAP: whole commands, literals inline -----------------------------------
_registry = None


def imap_command(data: bytes) -> None:
    from correo_server.mailstore.imap.commands import default_registry
    from correo_server.mailstore.imap.reader import BadCommand

    global _registry
    if _registry is None:
        _registry = default_registry()
    for utf8 in (False, True):
        try:
            _registry.parse(data if data.endswith(b"\r\n") else data + b"\r\n", utf8_names=utf8)
        except BadCommand:
            pass


# -- POP3 and ManageSieve -----------------------------------------------------
def pop3_command(data: bytes) -> None:
    from correo_server.mailstore.pop3.commands import CommandError, parse

    try:
        parse(data)
    except CommandError:
        pass


def managesieve_command(data: bytes) -> None:
    from correo_server.mailstore.managesieve.parser import ParseError, parse, parse_sasl_response

    for fn in (parse, parse_sasl_response):
        try:
            fn(data)
        except ParseError:
            pass


# -- MIME: the parse behind BODYSTRUCTURE, ENVELOPE, SEARCH -------------------
def mime(data: bytes) -> None:
    from correo_server.mailstore import message
    from correo_server.mailstore.imap.bodystructure import body_structure
    from correo_server.mailstore.imap.envelope import envelope

    top = message.parse(data)
    for extended in (False, True):
        out = body_structure(top, extended=extended)
        assert out.startswith(b"(") and out.endswith(b")")
        assert out.count(b"(") >= 1
    env = envelope(top)
    assert env.startswith(b"(") and env.endswith(b")")


# -- Sieve: the compiler and interpreter's own entry point ---------------------
def sieve(data: bytes) -> None:
    from correo_server.sieve.fuzz import fuzz_one_input

    fuzz_one_input(data)


# -- the CRD loader: YAML as a user writes it ----------------------------------
_tmp = None


def crd_loader(data: bytes) -> None:
    from correo_operator.loading import load_paths

    global _tmp
    if _tmp is None:
        _tmp = Path(tempfile.mkdtemp(prefix="correo-fuzz-"))
        atexit.register(shutil.rmtree, _tmp, True)
    path = _tmp / "input.yaml"
    path.write_bytes(data)
    loaded = load_paths([str(path)])
    assert isinstance(loaded.problems, list)


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "smtp_command": smtp_command,
    "smtp_data": smtp_data,
    "imap": imap_command,
    "pop3": pop3_command,
    "managesieve": managesieve_command,
    "mime": mime,
    "sieve": sieve,
    "crd_loader": crd_loader,
}


def corpus(name: str) -> list[tuple[str, bytes]]:
    folder = CORPUS / name
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []


if __name__ == "__main__":
    sys.exit("use tests/fuzz/run.py NAME [atheris options]")
