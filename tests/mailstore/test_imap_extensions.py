"""The shape of the IMAP server: one command or extension is one module of
``imap/commands``, and everything the server knows by name — the command
table, the states, the CAPABILITY list — is derived from the registered
modules."""
from __future__ import annotations

import importlib.util
import textwrap

from correo_server.mailstore.imap.commands import build_registry, command_modules, default_registry
from correo_server.mailstore.imap.commands.base import State, When
from imaptest_messages import SIMPLE
from imaptest_support import ALICE, RawClient, ServerThread, make_config, make_directory

XYZZY = '''
"""A made-up extension, XYZZY: a command, a STATUS item and an ENABLE target."""
from dataclasses import dataclass

from correo_server.mailstore.imap import responses as R
from correo_server.mailstore.imap.commands.base import LOGGED_IN, Command, Registry, StatusItem, ok


@dataclass(frozen=True, kw_only=True)
class Xyzzy(Command):
    name = "XYZZY"
    states = LOGGED_IN
    capability = "XYZZY"
    usage = "{cmd} needs a word"

    word: bytes

    @classmethod
    def parse(cls, r, p):
        r.sp()
        return cls(tag=p.tag, word=r.astring("a word"))

    async def run(self, s):
        s.write(R.untagged(b"XYZZY " + R.string(self.word[::-1])))
        return ok("Nothing happens.")


def register(registry: Registry) -> None:
    registry.command(Xyzzy)
    registry.status_item(StatusItem("XYZZYCOUNT", lambda folder: 42 + len(folder)))
    registry.enable("XYZZY", lambda s: None)
'''


def load_module(tmp_path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def capabilities(c: RawClient) -> list[bytes]:
    return c.cmd("CAPABILITY")[0].split()[2:]


def test_an_extension_is_one_module(tmp_path):
    """Adding one module gives the server a command, valid in the states it
    declares, with its syntax errors and usage, a capability listed after
    login only, a STATUS item and an ENABLE target — and nothing else
    changes."""
    xyzzy = load_module(tmp_path, "xyzzy", XYZZY)
    cfg = make_config(tmp_path)
    server = ServerThread(cfg, make_directory(cfg), registry=build_registry([*command_modules(), xyzzy]))
    plain = ServerThread(cfg, make_directory(cfg))
    try:
        server.deliver(ALICE, SIMPLE)
        c = RawClient(server.port)
        assert b"XYZZY" not in capabilities(c)
        assert c.cmd("XYZZY plugh")[-1].endswith(b"BAD Command XYZZY is not valid before login\r\n")
        c.login()
        assert b"XYZZY" in capabilities(c)
        assert c.cmd("XYZZY plugh") == [b'* XYZZY "hgulp"\r\n', b"t%d OK Nothing happens.\r\n" % c.n]
        assert c.cmd("XYZZY")[-1] == b"t%d BAD XYZZY needs a word\r\n" % c.n
        assert c.cmd("STATUS INBOX (MESSAGES XYZZYCOUNT)")[0] == b'* STATUS "INBOX" (MESSAGES 1 XYZZYCOUNT 43)\r\n'
        assert c.cmd("ENABLE XYZZY")[0] == b"* ENABLED XYZZY\r\n"
        assert b"XYZZY" not in capabilities(RawClient(plain.port))
        p = RawClient(plain.port)
        p.login()
        assert b"XYZZY" not in capabilities(p)
        assert p.cmd("XYZZY plugh")[-1].endswith(b"BAD Unknown command XYZZY\r\n")
        assert p.cmd("STATUS INBOX (XYZZYCOUNT)")[-1].split()[1] == b"BAD"
        assert p.cmd("ENABLE XYZZY")[0] == b"* ENABLED\r\n"
    finally:
        server.stop()
        plain.stop()


def test_the_capability_list_is_derived_from_the_registered_modules(imap):
    """Every word of CAPABILITY, before and after login, comes from exactly
    one module's registration; leaving a module out (MOVE) removes its
    capability and its command, and UID's list of commands follows."""
    registry = default_registry()
    c = RawClient(imap.port)
    before = capabilities(c)
    c.login()
    after = capabilities(c)
    like = _SessionLike(imap.config.mailstore.max_literal_bytes)
    assert [w.decode() for w in before] == registry.capabilities(like, logged_in=False)
    assert [w.decode() for w in after] == registry.capabilities(like, logged_in=True)
    origin: dict[str, set[str]] = {}
    for cap in registry.capability_list:
        for word in cap.words(like):
            origin.setdefault(word, set()).add(cap.module)
    assert all(len(modules) == 1 for modules in origin.values()), origin
    assert {cap.module for cap in registry.capability_list if cap.when & When.BEFORE_LOGIN} == {
        "any", "id", "literalplus", "login", "starttls"}
    assert b"MOVE" in after and "MOVE" in registry.uid_commands()
    without = build_registry([m for m in command_modules() if m.__name__.rsplit(".", 1)[-1] != "move"])
    assert "MOVE" not in without.commands and "MOVE" not in without.uid_commands()
    assert "MOVE" not in without.capabilities(like, logged_in=True)
    for cls in registry.commands.values():  # every command says where it is valid
        assert cls.states and not (cls.states & ~(State.NOT_AUTHENTICATED | State.AUTHENTICATED | State.SELECTED))


class _SessionLike:
    """Enough of a session for capability functions (a loopback client, no TLS)."""

    def __init__(self, max_literal: int) -> None:
        self.max_literal = max_literal

    class ch:
        tls_available = False
        tls_active = False

    def login_allowed(self) -> bool:
        return True
