"""The relay stays on aiosmtpd's public interface (issue 12): no private name
imported, read, written or overridden, so that an aiosmtpd release inside
the pinned range cannot break it silently."""
from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP

import correo_server.relay.smtp as relay_smtp

DOCUMENTED = {"_create_session", "_create_envelope"}  # "methods subclasses can override" (aiosmtpd docs)


def aiosmtpd_private_names() -> set[str]:
    async def instance_attributes() -> set[str]:
        return set(vars(SMTP(object(), hostname="x", loop=asyncio.get_running_loop())))

    names = {n for cls in SMTP.__mro__ for n in vars(cls)}
    names |= asyncio.run(instance_attributes())
    names |= {"_reader", "_writer"}  # set once a client connects (_cb_client_connected)
    return {n for n in names if n.startswith("_") and not n.startswith("__")} - DOCUMENTED


def test_the_relay_uses_no_private_aiosmtpd_name():
    private = aiosmtpd_private_names()
    assert {"_reader", "_handle_client", "_timeout_cb", "_smtp_methods"} <= private  # the check sees them
    tree = ast.parse(Path(relay_smtp.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiosmtpd"):
            found |= {a.name for a in node.names if a.name.startswith("_")}
        elif isinstance(node, ast.Attribute) and node.attr in private:
            found.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in private:
            found.add(node.name)
    assert not found


def test_aiosmtpd_is_pinned_to_the_range_the_relay_was_built_for():
    pyproject = (Path(relay_smtp.__file__).parents[3] / "pyproject.toml").read_text()
    assert '"aiosmtpd>=1.4.6,<1.5"' in pyproject
    major, minor, *_ = aiosmtpd.smtp.__version__.split(".")
    assert (int(major), int(minor)) == (1, 4)


async def test_every_command_the_relay_serves_is_found_at_each_connection(make_relay):
    """The relay lists only its commands and AUTH mechanisms to aiosmtpd (a
    cheaper connection); HELP names each command, and each one answers."""
    from relay_helpers import RawClient

    served = sorted(n[5:] for n in dir(relay_smtp.RelaySMTP) if n.startswith("smtp_"))
    assert {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP", "AUTH"} <= set(served)
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    code, lines = await client.cmd("HELP")
    assert code == 250 and set(lines[-1].split()) >= {"EHLO", "MAIL", "RCPT", "DATA", "NOOP", "VRFY", "HELP"}
    assert (await client.cmd("EHLO client.example"))[0] == 250
    for command, expected in (("NOOP", 250), ("RSET", 250), ("VRFY alice", 252), ("XYZZY", 500),
                              ("AUTH PLAIN", 503)):  # AUTH is found: on port 25 it sends to submission
        code, lines = await client.cmd(command)
        assert code == expected, (command, lines)
    assert (await client.cmd("QUIT"))[0] == 221
