"""Real ManageSieve clients manage a user's scripts: sieve-connect (Debian) and sievelib (PyPI)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from managesieve_support import ALICE, PASSWORD, SieveServer

SCRIPT = ('require ["fileinto", "vacation"];\n'
          'if header :contains "List-Id" "sieve" { fileinto "Lists"; stop; }\n'
          'vacation :days 7 :subject "Away" "I am on holiday until Monday.";\n')

SIEVE_CONNECT = shutil.which("sieve-connect")


def sieve_connect(server: SieveServer, cafile, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """sieve-connect over STARTTLS, verifying the server's certificate, the password on a pipe."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, PASSWORD.encode() + b"\n")
    os.close(write_fd)
    try:
        return subprocess.run(
            [SIEVE_CONNECT, "--server", "127.0.0.1", "--port", str(server.port), "--user", ALICE,
             "--passwordfd", str(read_fd), "--tlscafile", str(cafile), "--tlshostname", "mail.example.com",
             "--nosrv", "--noclearchan", *args],
            input=stdin, capture_output=True, text=True, timeout=60, pass_fds=(read_fd,))
    finally:
        os.close(read_fd)


@pytest.mark.skipif(SIEVE_CONNECT is None, reason="sieve-connect is missing: apt install sieve-connect "
                    "(scripts/setup-test-env does)")
def test_sieve_connect_uploads_activates_lists_downloads_and_deletes(server, tls_files, tmp_path):
    cafile = tls_files[0]
    local = tmp_path / "holiday.sieve"
    local.write_text(SCRIPT)
    up = sieve_connect(server, cafile, "--upload", "--localsieve", str(local), "--remotesieve", "holiday")
    assert up.returncode == 0, up.stderr
    assert (server.scripts_dir() / "scripts" / "holiday.sieve").read_text() == SCRIPT
    act = sieve_connect(server, cafile, "--activate", "--remotesieve", "holiday")
    assert act.returncode == 0, act.stderr
    listed = sieve_connect(server, cafile, "--list")
    assert listed.returncode == 0 and listed.stdout.splitlines() == ['"holiday" ACTIVE']
    copy = tmp_path / "copy.sieve"
    down = sieve_connect(server, cafile, "--download", "--remotesieve", "holiday", "--localsieve", str(copy))
    assert down.returncode == 0, down.stderr
    assert copy.read_text() == SCRIPT
    refused = sieve_connect(server, cafile, "--delete", "--remotesieve", "holiday")
    assert refused.returncode != 0  # the active script cannot be deleted
    assert sieve_connect(server, cafile, "--deactivate").returncode == 0
    deleted = sieve_connect(server, cafile, "--delete", "--remotesieve", "holiday")
    assert deleted.returncode == 0, deleted.stderr
    assert "holiday" not in sieve_connect(server, cafile, "--list").stdout


@pytest.mark.skipif(SIEVE_CONNECT is None, reason="sieve-connect is missing: apt install sieve-connect")
def test_sieve_connect_shows_where_a_script_is_wrong(server, tls_files, tmp_path):
    local = tmp_path / "bad.sieve"
    local.write_text('require "fileinto";\nif true {\n  fileinto "x"\n}\n')
    out = sieve_connect(server, tls_files[0], "--upload", "--localsieve", str(local), "--remotesieve", "bad")
    assert out.returncode != 0
    assert "line 4, column 1" in out.stdout + out.stderr
    assert not (server.scripts_dir() / "scripts" / "bad.sieve").exists()


@pytest.mark.filterwarnings("ignore:Credentials are sent over an unencrypted")  # loopback: allowed, like Dovecot
def test_sievelib_client_manages_scripts(server):
    from sievelib.managesieve import Client

    client = Client("127.0.0.1", server.port)
    assert client.connect(ALICE, PASSWORD, starttls=False, authmech="PLAIN")
    assert "fileinto" in client.get_sieve_capabilities()
    assert client.havespace("holiday", len(SCRIPT))
    assert client.putscript("holiday", SCRIPT)
    assert client.setactive("holiday")
    active, others = client.listscripts()
    assert active == "holiday" and others == []
    assert client.getscript("holiday").strip() == SCRIPT.strip()  # sievelib strips the final line end
    assert client.checkscript(SCRIPT)
    assert not client.checkscript('keep')
    assert client.renamescript("holiday", "summer")
    assert client.listscripts()[0] == "summer"
    assert not client.deletescript("summer")  # active
    assert client.setactive("")
    assert client.deletescript("summer")
    assert client.listscripts() == (None, [])
    client.logout()


def test_sievelib_over_starttls_verifying_the_certificate(tls_only, tls_files, monkeypatch):
    from sievelib.managesieve import Client

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))  # sievelib trusts the system's store
    client = Client("127.0.0.1", tls_only.port)
    assert client.connect(ALICE, PASSWORD, starttls=True, authmech="PLAIN")
    assert client.putscript("tls", "keep;\n")
    assert client.listscripts() == (None, ["tls"])
    client.logout()
