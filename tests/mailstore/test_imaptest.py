"""Dovecot's own compliance suite against the mailstore's IMAP server:
imaptest's 71 test groups (``../shared/imaptest``, built for Debian's
dovecot 2.3), the scripts Dovecot is tested with.  Dovecot fails none of
them; neither may correo.  Nor may it skip one for a capability it does not
offer.  imaptest does not count a group it runs nothing of as skipped (its
summary says "0 skipped" while such a group runs zero commands), so the
groups' ``capabilities:`` headers are checked against correo's CAPABILITY:
the only ones correo does not offer are :data:`NOT_OFFERED`, each with the
reason (against Dovecot 2.3 here: 457 base and 330 extension commands).

Needs ``../shared/imaptest`` beside the clone (or ``CORREO_IMAPTEST``
naming the binary) and Debian's ``dovecot-core`` (imaptest links
``libdovecot``); ``scripts/setup-test-env`` installs it."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from imaptest_messages import SIMPLE
from imaptest_support import ALICE, PASSWORD, ServerThread, make_config, make_directory

ROOT = Path(__file__).resolve().parents[2]


def find_imaptest() -> Path | None:
    named = os.environ.get("CORREO_IMAPTEST")
    if named:
        return Path(named)
    tops = [ROOT]
    try:  # a git worktree: beside the main checkout
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        tops.append((ROOT / common).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    for top in tops:
        candidate = top.parent / "shared" / "imaptest" / "imaptest"
        if candidate.exists():
            return candidate
    return None


IMAPTEST = find_imaptest()
# Capabilities some imaptest groups need that correo does not offer, so those
# groups run no command at all.  A capability correo starts offering must
# leave this list (the test says so), and no other may join it unnoticed.
NOT_OFFERED = {
    "CONTEXT=SORT": "RFC 5267 for SORT; Dovecot does not offer it either",
    "NOTIFY": "RFC 5465 not built yet; Dovecot runs this group (7 commands)",
    "URLAUTH": "RFC 4467 (BURL submission) is not part of correo; Dovecot does not offer it in this setup",
    "URLAUTH=BINARY": "as URLAUTH",
}
LIBDOVECOT = Path("/usr/lib/dovecot/libdovecot.so.0")


@pytest.fixture(scope="module")
def compliance_server(tmp_path_factory):
    """The IMAP server with its defaults for line length (imaptest's ID test
    sends a 30 KB line) and a few messages in INBOX, as imaptest wants."""
    tmp = tmp_path_factory.mktemp("imaptest")
    cfg = make_config(tmp, max_line_length=65536, max_literal_bytes=64 * 1024 * 1024)
    server = ServerThread(cfg, make_directory(cfg, quota=0))
    for _ in range(3):
        server.deliver(ALICE, SIMPLE)
    yield server
    server.stop()


@pytest.mark.skipif(IMAPTEST is None, reason="imaptest not found: put the team's shared/imaptest beside the "
                                             "clone (../shared/imaptest) or set CORREO_IMAPTEST")
@pytest.mark.skipif(not LIBDOVECOT.exists(), reason="imaptest needs Debian's dovecot-core "
                                                    "(scripts/setup-test-env installs it)")
def test_every_imaptest_compliance_group_passes(compliance_server):
    tests = IMAPTEST.parent / "tests"
    proc = subprocess.run(
        [str(IMAPTEST), "host=127.0.0.1", f"port={compliance_server.port}", f"user={ALICE}",
         f"pass={PASSWORD}", f"test={tests}"],
        capture_output=True, text=True, errors="replace", timeout=600)
    out = proc.stdout + proc.stderr
    summary = re.search(r"(\d+) test groups: (\d+) failed, (\d+) skipped due to missing capabilities", out)
    base = re.search(r"base protocol: (\d+)/(\d+) individual commands failed", out)
    ext = re.search(r"extensions: (\d+)/(\d+) individual commands failed", out)
    assert summary and base and ext, f"imaptest did not finish (exit {proc.returncode}):\n{out[-3000:]}"
    groups, failed, skipped = (int(g) for g in summary.groups())
    failures = "\n".join(line[:300] for line in out.splitlines()
                         if line.startswith(("*** Test", " - failed", " - Command", " - first")))
    assert groups >= 71
    assert (failed, int(base.group(1)), int(ext.group(1))) == (0, 0, 0), failures
    skipped_groups = [line for line in out.splitlines() if "skipped" in line.lower()][:20]
    assert skipped == 0, (f"{skipped} of {groups} groups skipped for capabilities correo does not offer "
                          "(Dovecot runs them all):\n" + "\n".join(skipped_groups))


def group_capabilities(tests: Path) -> dict[str, set[str]]:
    """The capabilities each imaptest group says it needs (its header)."""
    out = {}
    for path in sorted(tests.iterdir()):
        if path.suffix == ".mbox" or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            if line.lower().startswith("capabilities:"):
                out[path.name] = {c.upper() for c in line.split(":", 1)[1].split()}
    return out


@pytest.mark.skipif(IMAPTEST is None, reason="imaptest not found: put the team's shared/imaptest beside the "
                                             "clone (../shared/imaptest) or set CORREO_IMAPTEST")
def test_no_imaptest_group_runs_empty_for_a_capability_correo_lacks(compliance_server):
    from imaptest_support import RawClient
    raw = RawClient(compliance_server.port)
    raw.login()
    offered = set(raw.cmd("CAPABILITY")[0].decode().split()[2:])
    raw.close()
    needed = group_capabilities(IMAPTEST.parent / "tests")
    assert needed, "no imaptest group names a capability: is this imaptest's tests folder?"
    missing = {c: sorted(g for g, caps in needed.items() if c in caps)
               for caps in needed.values() for c in caps if c not in offered}
    assert not set(missing) - set(NOT_OFFERED), f"groups that would run no command: {missing}"
    now_offered = set(NOT_OFFERED) - set(missing)
    assert not now_offered, f"correo offers {now_offered} now: take them out of NOT_OFFERED"
