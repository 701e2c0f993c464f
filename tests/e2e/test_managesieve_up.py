"""On ``correo up``, a user manages a personal Sieve script with sieve-connect (issue 14)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.e2e

SIEVE_CONNECT = shutil.which("sieve-connect")


@pytest.mark.skipif(SIEVE_CONNECT is None, reason="sieve-connect is missing: apt install sieve-connect "
                    "(scripts/setup-test-env does)")
def test_sieve_connect_manages_a_script_on_the_local_stack(stack, tmp_path):
    endpoints = stack.state["endpoints"]
    host, port = endpoints["managesieve"].rsplit(":", 1)
    domain = next(v for k, v in stack.status().items() if k.startswith("MailDomain/"))
    assert domain["status"]["endpoints"]["managesieve"] == endpoints["managesieve"]  # what correo status shows
    cert = stack.data / "config" / "tls" / "tls.crt"
    script = tmp_path / "rules.sieve"
    script.write_text('require "fileinto";\nif header :contains "subject" "[list]" { fileinto "Lists"; }\n')

    def sieve_connect(*args: str) -> subprocess.CompletedProcess:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"wonderland\n")
        os.close(write_fd)
        try:
            return subprocess.run(
                [SIEVE_CONNECT, "--server", host, "--port", port, "--user", "alice@example.com",
                 "--passwordfd", str(read_fd), "--tlscafile", str(cert), "--tlshostname", "mail.example.com",
                 "--nosrv", "--noclearchan", *args],
                capture_output=True, text=True, timeout=60, pass_fds=(read_fd,))
        finally:
            os.close(read_fd)

    up = sieve_connect("--upload", "--localsieve", str(script), "--remotesieve", "rules")
    assert up.returncode == 0, up.stderr
    assert sieve_connect("--activate", "--remotesieve", "rules").returncode == 0
    assert sieve_connect("--list").stdout.splitlines() == ['"rules" ACTIVE']
    assert sieve_connect("--deactivate").returncode == 0
    assert sieve_connect("--delete", "--remotesieve", "rules").returncode == 0
    assert sieve_connect("--list").stdout.strip() == ""
