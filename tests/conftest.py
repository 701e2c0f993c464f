"""Fixtures every test folder may use. Each part has its own conftest.py beside
its tests for what only it needs."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start_reaper():
    """The watchdog that kills what a test run left running, even a killed one (reaper.py)."""
    spec = importlib.util.spec_from_file_location("correo_test_reaper", Path(__file__).with_name("reaper.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start()


_REAPER = _start_reaper()


def _start_null_dns() -> None:
    """Every `correo up` the tests start asks a loopback DNS server that knows
    no name (NXDOMAIN), never the machine's resolver: no test sends DNS
    traffic off the machine, even one that does not pass its own ``--dns``
    (correo up reads $CORREO_DNS when ``--dns`` is not given)."""
    if os.environ.get("CORREO_DNS"):
        return
    from dnslib.server import BaseResolver, DNSServer

    class NoName(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            reply.header.rcode = 3  # NXDOMAIN
            return reply

    server = DNSServer(NoName(), port=0, address="127.0.0.1", tcp=False)
    server.start_thread()
    os.environ["CORREO_DNS"] = f"127.0.0.1:{server.server.server_address[1]}"


_start_null_dns()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return ROOT / "examples"
