"""Running Pigeonhole's ``sieve-test`` (Debian's dovecot-sieve) and reading what it prints.

``sieve-test`` compiles a script and prints the actions it would take for a
message, without carrying them out.  :class:`Pigeonhole` writes a minimal
Dovecot configuration in a temporary folder (spamtest/virustest reading
``X-Spam-Score`` / ``X-Virus-Level``, ``+`` as recipient delimiter, personal
and global script folders for ``include``, vacation periods as correo's) and
runs it; :func:`parse_output` turns the text into the normalised form the
differential test compares.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SIEVE_TEST = shutil.which("sieve-test")

CONFIG = """\
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 0
first_valid_gid = 0
mail_home = {home}
mail_location = maildir:{home}/Maildir
base_dir = {home}/run
state_dir = {home}/state
log_path = /dev/stderr
recipient_delimiter = +
plugin {{
  sieve_extensions = +vacation-seconds +spamtest +spamtestplus +virustest +editheader
  sieve = file:{home}/personal;active={home}/active.sieve
  sieve_global = {home}/global
  sieve_vacation_min_period = 0
  sieve_vacation_default_period = 7d
  sieve_vacation_max_period = 90d
  sieve_max_redirects = 4
  sieve_max_actions = 32
  sieve_spamtest_status_type = score
  sieve_spamtest_status_header = X-Spam-Score
  sieve_spamtest_max_value = 15
  sieve_virustest_status_type = score
  sieve_virustest_status_header = X-Virus-Level
  sieve_virustest_max_value = 5
}}
"""


@dataclass
class PigeonholeRun:
    returncode: int
    stdout: str
    stderr: str


class Pigeonhole:
    """A sieve-test set-up in its own folder under the system's temporary
    folder (Dovecot drops root privileges to nobody, who must be able to read
    it: pytest's own temporary folders are private to root).  ``close()``
    removes it."""

    def __init__(self) -> None:
        home = Path(tempfile.mkdtemp(prefix="correo-pigeonhole-"))
        home.chmod(0o755)
        self.home = home
        for sub in ("personal", "global", "run", "state", "Maildir", "scripts"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:  # Dovecot refuses mail access as root: run as nobody
            uid = gid = 65534
            for path in [home, *home.rglob("*")]:
                os.chown(path, uid, gid)
        else:
            uid, gid = os.getuid(), os.getgid()
        self.config = home / "dovecot.conf"
        self.config.write_text(CONFIG.format(uid=uid, gid=gid, home=home))
        self.uid, self.gid = uid, gid

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def _own(self, path: Path) -> None:
        if os.getuid() == 0:
            os.chown(path, self.uid, self.gid)

    def add_folder(self, name: str) -> None:
        """A Maildir++ folder, for mailboxexists."""
        for sub in ("cur", "new", "tmp"):
            path = self.home / "Maildir" / f".{name}" / sub
            path.mkdir(parents=True, exist_ok=True)
            for p in (path.parent, path):
                self._own(p)

    def add_script(self, location: str, name: str, text: str) -> None:
        path = self.home / location / f"{name}.sieve"
        path.write_text(text)
        self._own(path)

    def run(self, script: str, message: bytes, *, sender: str, recipient: str, name: str = "t") -> PigeonholeRun:
        spath = self.home / "scripts" / f"{name}.sieve"
        mpath = self.home / "scripts" / f"{name}.eml"
        spath.write_text(script)
        mpath.write_bytes(message)
        self._own(spath)
        self._own(mpath)
        env = dict(os.environ, TZ="UTC")
        proc = subprocess.run(
            [SIEVE_TEST, "-c", str(self.config), "-f", sender, "-r", recipient, "-a", recipient,
             str(spath), str(mpath)],
            capture_output=True, text=True, env=env, timeout=60)
        return PigeonholeRun(proc.returncode, proc.stdout, proc.stderr)


_FLAGS = re.compile(r"^\s*\+ add IMAP flags: (.*)$")


def _flags(text: str) -> tuple[str, ...]:
    return tuple(sorted(f.lower() for f in text.split()))


def parse_output(run: PigeonholeRun) -> tuple:
    """(outcome, actions): outcome "ok", "error" (run-time error, implicit keep
    taken) or "compile-error"; actions a sorted tuple of normalised actions."""
    if "failed to compile sieve script" in run.stderr:
        if "Permission denied" in run.stderr or "No such file" in run.stderr:
            raise AssertionError(f"sieve-test cannot read its files:\n{run.stderr}")
        return ("compile-error", ())
    if run.returncode != 0:
        if "resolved with successful implicit keep" in run.stderr:
            return ("error", (("store", "inbox", ()),))
        raise AssertionError(f"sieve-test failed: rc={run.returncode}\n{run.stdout}\n{run.stderr}")
    actions: list[tuple] = []
    section = None
    current: list | None = None
    in_message = False
    vacation: dict | None = None
    body_lines: list[str] = []

    def close() -> None:
        nonlocal current
        if current is not None:
            actions.append(tuple(current))
        current = None

    for line in run.stdout.splitlines():
        if in_message:
            if line == "END MESSAGE":
                in_message = False
                assert vacation is not None
                vacation["reason"] = "\n".join(body_lines).strip()
                actions.append(("vacation", vacation["seconds"], vacation.get("subject"), vacation["reason"]))
                vacation = None
            else:
                body_lines.append(line)
            continue
        if line.startswith("Performed actions:"):
            section = "performed"
            continue
        if line.startswith("Implicit keep:"):
            close()
            section = "implicit"
            continue
        stripped = line.strip()
        if not stripped or stripped == "(none)" or section is None:
            continue
        if stripped.startswith("* store message in folder: "):
            close()
            folder = stripped[len("* store message in folder: "):]
            current = ["store", "inbox" if folder.upper() == "INBOX" else folder, ()]
        elif stripped.startswith("+ add IMAP flags: ") and current is not None:
            current[2] = _flags(stripped[len("+ add IMAP flags: "):])
        elif stripped.startswith("+ "):
            continue  # create mailbox, preserve implicit keep
        elif stripped.startswith("* redirect message to: "):
            close()
            actions.append(("redirect", stripped[len("* redirect message to: "):].strip("<>").lower()))
        elif stripped.startswith("* reject message with reason: "):
            close()
            actions.append(("reject", stripped[len("* reject message with reason: "):]))
        elif stripped == "* discard" or stripped == "* track duplicate":
            close()
        elif stripped.startswith("* send vacation message"):
            close()
            vacation = {"seconds": None}
        elif stripped.startswith("=> ") and vacation is not None:
            key, _, value = stripped[3:].partition(":")
            key, value = key.strip(), value.strip()
            if key == "seconds":
                vacation["seconds"] = int(value)
            elif key == "subject":
                vacation["subject"] = value
        elif stripped == "START MESSAGE":
            in_message = True
            body_lines = []
        elif stripped.startswith("* "):
            close()
            actions.append(("unknown", stripped))
    close()
    return ("ok", tuple(sorted(actions, key=repr)))
