"""Moving a mailbox between shards on a real ``correo up`` (2 shards, the
proxy, the queue, the relay), with mail arriving all along:

- with fault points armed, the source shard is killed (SIGKILL) right after
  the fence and in the middle of the export, and the target right after the
  import; the supervisor restarts each, the move resumes from what is on
  disk, and the mailbox ends on the new shard with every message once;
- under load with an imapclient client logged in: the client is
  disconnected by the move, logs in again through the proxy and sees the
  same UIDVALIDITY and the same UIDs; nothing is lost or delivered twice;
  ``correo status`` says ``Moving`` during the move and the new shard after;
  the old copy is removed after the grace period;
- a move to a shard that holds mail of the mailbox that no move put there
  does not start (``Moving``: ``Blocked``): the mailbox stays available
  where it is; once the folder is moved aside the move goes through.
"""
from __future__ import annotations

import smtplib
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import imapclient
import pytest
import yaml

from correo_operator import placement

from . import scalekit
from .scalekit import DOMAIN, PASSWORD

pytestmark = pytest.mark.e2e

SHARDS = 2
ON_0 = [a for a in (f"user{i}@{DOMAIN}" for i in range(40)) if placement.rendezvous(a, SHARDS) == 0][:4]
SENDER, CRASHED, LOADED, BLOCKED = ON_0
FAULTS = "mailstore.move.fenced,mailstore.move.exporting@3,mailstore.move.imported"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("moves")
    scalekit.write_yaml(root / "yaml", SHARDS, ON_0)
    once = root / "faults-fired"
    once.mkdir()
    s = scalekit.start(root / "data", root / "yaml", services=SHARDS + 4,
                       env={"CORREO_FAULTS": FAULTS, "CORREO_FAULTS_ONCE": str(once),
                            "CORREO_MOVE_GRACE_SECONDS": "3"})
    s.yaml_file = root / "yaml" / "scale.yaml"
    s.fired = once
    yield s
    s.stop()


def pin(stack, address: str, shard: int) -> None:
    docs = list(yaml.safe_load_all(stack.yaml_file.read_text()))
    for d in docs:
        if d.get("kind") == "Mailbox" and d["spec"]["address"] == address:
            d["spec"]["shard"] = shard
    stack.yaml_file.write_text(yaml.safe_dump_all(docs))  # `correo up` watches the YAML


def login(stack, address: str) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", port=stack.port("imap"), ssl=False, timeout=30)
    client.login(address, PASSWORD)
    return client


def inbox(stack, address: str) -> tuple[int, dict[int, str]]:
    """(UIDVALIDITY, UID → subject) of INBOX, through the proxy."""
    with login(stack, address) as client:
        info = client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        return info[b"UIDVALIDITY"], {uid: v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().partition(": ")[2]
                                      for uid, v in data.items()}


def mailbox_status(stack, address: str) -> dict:
    return stack.status()[f"Mailbox/{address.partition('@')[0]}"]["status"]


def moving(status: dict) -> dict:
    return next((c for c in status["conditions"] if c["type"] == "Moving"), {})


def send_many(stack, to: str, prefix: str, count: int, pause: float = 0.0) -> list[str]:
    """Mail arriving: handed to the queue over LMTP (as the relay does), one
    transaction each; the queue acknowledged each subject returned."""
    subjects = []
    with smtplib.LMTP("127.0.0.1", stack.port("queue_lmtp"), timeout=60) as lmtp:
        for i in range(count):
            subject = f"{prefix} {i}"
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "someone@elsewhere.test", to, subject
            msg.set_content(f"{subject}\n")
            lmtp.send_message(msg)
            subjects.append(subject)
            if pause:
                time.sleep(pause)
    return subjects


def wait_delivered(stack, address: str, subjects: list[str], timeout: float = 180.0) -> tuple[int, dict[int, str]]:
    def all_there():
        validity, seen = inbox(stack, address)
        return (validity, seen) if sorted(seen.values()) == sorted(subjects) else None
    return stack.wait_for(all_there, timeout, f"{len(subjects)} messages in {address}")


def old_copy(stack, address: str) -> Path:
    return stack.data / "mail" / address  # shard 0 keeps DATA/mail


def test_a_move_survives_the_source_and_the_target_killed_at_each_step(stack):
    before = send_many(stack, CRASHED, "before", 12)
    validity, seen = wait_delivered(stack, CRASHED, before)
    pin(stack, CRASHED, 1)
    during: list[str] = []
    sender = threading.Thread(target=lambda: during.extend(send_many(stack, CRASHED, "during", 10, pause=0.5)))
    sender.start()
    stack.wait_for(lambda: mailbox_status(stack, CRASHED).get("shard") == 1, 240, "the directory to name shard 1")
    sender.join()
    fired = sorted(p.name for p in stack.fired.iterdir())
    assert fired == sorted(FAULTS.replace("@3", "").split(",")), fired  # each shard was killed where asked
    after_validity, after = wait_delivered(stack, CRASHED, before + during)
    assert after_validity == validity
    assert {uid: s for uid, s in after.items() if uid in seen} == seen  # the same UIDs for the same messages
    assert len(after) == len(set(after.values())) == 22  # none twice
    log = stack.log()
    assert log.count("service_exited") >= 3 and "move_switched" in log


def test_a_move_under_load_keeps_uids_and_uidvalidity_and_loses_nothing(stack):
    before = send_many(stack, LOADED, "old", 30)
    validity, seen = wait_delivered(stack, LOADED, before)
    client = login(stack, LOADED)
    client.select_folder("INBOX")
    client.add_flags(list(seen)[:5], [b"\\Flagged"])
    client.create_folder("Kept")
    client.copy(list(seen)[5:8], "Kept")
    client.idle()  # logged in and waiting, as a mail client is

    during: list[str] = []
    sender = threading.Thread(target=lambda: during.extend(send_many(stack, LOADED, "new", 40, pause=0.05)))
    sender.start()
    time.sleep(1.0)  # mail is arriving
    pin(stack, LOADED, 1)
    reasons = set()

    def moved():
        status = mailbox_status(stack, LOADED)
        cond = moving(status)
        if cond:
            reasons.add((cond["status"], cond["reason"]))
        return status.get("shard") == 1
    stack.wait_for(moved, 240, "the move to shard 1")
    sender.join()

    # the logged-in client was told to go (BYE through the proxy)
    with pytest.raises(Exception):  # noqa: B017 - imapclient raises what the closed connection gives
        client.idle_check(timeout=30)
        client.idle_done()
        client.noop()
    after_validity, after = wait_delivered(stack, LOADED, before + during)
    assert after_validity == validity
    assert {uid: s for uid, s in after.items() if uid in seen} == seen
    assert len(after) == len(set(after.values())) == 70
    with login(stack, LOADED) as again:
        again.select_folder("INBOX", readonly=True)
        flagged = again.search(["FLAGGED"])
        assert sorted(flagged) == sorted(list(seen)[:5])
        assert again.select_folder("Kept", readonly=True)[b"EXISTS"] == 3

    stack.wait_for(lambda: not old_copy(stack, LOADED).exists(), 120, "the old copy removed after the grace")
    stack.wait_for(lambda: moving(mailbox_status(stack, LOADED)).get("reason") == "NotMoving", 60, "NotMoving")
    # each step was said as it happened (a move this small is quicker than `correo status` can look)
    said = [ln for ln in stack.log().splitlines() if "move_" in ln and LOADED in ln]
    for event, reason in (("move_fenced", "Fencing"), ("move_copied", "Copying"), ("move_switched", "Switching"),
                          ("move_old_copy_removed", "Moved"), ("move_done", "Moved")):
        assert any(event in ln and f"reason={reason}" in ln for ln in said), (event, said)
    assert reasons & {("False", "Moved"), ("True", "Copying"), ("True", "Switching"), ("True", "Pending")}, reasons


def test_a_move_the_target_cannot_take_leaves_the_mailbox_available(stack):
    before = send_many(stack, BLOCKED, "kept", 3)
    validity, seen = wait_delivered(stack, BLOCKED, before)
    stray = stack.data / "mail-1" / BLOCKED  # mail an earlier placement left on shard 1
    (stray / "cur").mkdir(parents=True)
    (stray / "cur" / "1.stray:2,S").write_bytes(b"Subject: left behind\r\n\r\nold\r\n")
    pin(stack, BLOCKED, 1)
    cond = stack.wait_for(lambda: (c := moving(mailbox_status(stack, BLOCKED))).get("reason") == "Blocked" and c,
                          120, "Moving=Blocked")
    assert cond["status"] == "True" and str(stray) in cond["message"]
    assert mailbox_status(stack, BLOCKED)["shard"] == 0
    more = send_many(stack, BLOCKED, "still", 2)  # still delivered, and readable, where it is
    assert wait_delivered(stack, BLOCKED, before + more)[0] == validity
    assert "Blocked" in stack.correo("status").stdout

    aside = stack.data.parent / "moved-aside"
    stray.rename(aside)  # the administrator settles it
    stack.wait_for(lambda: mailbox_status(stack, BLOCKED).get("shard") == 1, 120, "the move after the folder went")
    after_validity, found = wait_delivered(stack, BLOCKED, before + more)
    assert after_validity == validity and {u: s for u, s in found.items() if u in seen} == seen
    assert (aside / "cur" / "1.stray:2,S").exists()  # nothing of it was touched
