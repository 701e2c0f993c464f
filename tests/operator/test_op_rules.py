"""Mail rules through the operator (API double): a Mailbox's Sieve script and
auto-reply reach the directory Secret; a script that does not compile sets
Ready=False with reason InvalidSieve and the line and column, and the
previous valid script stays in the directory; status shows the rules."""
from __future__ import annotations

import base64

import pytest
import yaml
from opkit import NS, make_ready, mailbox, maildomain, password_secret

from correo_operator import statuspoll
from correo_operator.reconcile import Reconciler

DOMAIN = "example-com"
ANA = "ana@example.com"
GOOD = 'require "fileinto";\nif header :contains "subject" "[news]" { fileinto "News"; }\n'
BROKEN = 'require "fileinto";\nif header :contains "subject" "[news]" {\n  fileinto "News"\n}\n'


@pytest.fixture
async def world(store, kube, clock, dataplane):
    store.put(maildomain(DOMAIN, catchAll="ana@example.com"))
    store.put(password_secret("ana-password", "ana"))
    store.put(mailbox("ana", ANA, sieve=GOOD, autoReply={"body": "Away until Monday."}))
    dataplane.load_mailboxes(ANA)
    r = Reconciler(kube, after=statuspoll.StatusWriter(dataplane, clock=clock), debounce=0)
    await r.run(NS, DOMAIN)
    make_ready(store)
    await r.run(NS, DOMAIN)
    return r


def directory(store) -> dict:
    secret = store.one("Secret", NS, f"{DOMAIN}-directory")
    return {m["address"]: m for m in yaml.safe_load(base64.b64decode(secret["data"]["directory.yaml"]))["mailboxes"]}


def config(store) -> dict:
    return yaml.safe_load(store.one("ConfigMap", NS, f"{DOMAIN}-config")["data"]["correo.yaml"])


def ready(store) -> dict:
    return next(c for c in store.one("Mailbox", NS, "ana")["status"]["conditions"] if c["type"] == "Ready")


class TestRulesReachTheServers:
    async def test_script_auto_reply_and_catch_all_are_rendered(self, world, store):
        entry = directory(store)[ANA]
        assert entry["sieve"] == GOOD
        assert entry["autoReply"]["body"] == "Away until Monday." and entry["autoReply"]["intervalDays"] == 7
        (dom,) = config(store)["domains"]
        assert dom["catchAll"] == ANA and dom["recipientDelimiter"] == "+"
        assert config(store)["mailstore"]["queue"] == f"{DOMAIN}-queue.{NS}.svc:2424"


class TestInvalidSieve:
    async def test_a_broken_edit_keeps_the_previous_script_and_says_where(self, world, store, dataplane):
        dataplane.mailstore["mailboxes"][ANA]["rules"] = {"adminScript": True, "autoReply": True, "errors": 0}
        store.edit("Mailbox", NS, "ana", {"spec": {"sieve": BROKEN}})
        await world.run(NS, DOMAIN)
        assert directory(store)[ANA]["sieve"] == GOOD  # still in force
        cond = ready(store)
        assert (cond["status"], cond["reason"]) == ("False", "InvalidSieve")
        assert "line 4, column 1" in cond["message"] and "previous valid script still runs" in cond["message"]
        assert any(e["reason"] == "InvalidSieve" and e["type"] == "Warning" for e in store.find("Event", NS))
        # fixed: the new script replaces the old, Ready again
        store.edit("Mailbox", NS, "ana", {"spec": {"sieve": 'keep;\n'}})
        await world.run(NS, DOMAIN)
        assert directory(store)[ANA]["sieve"] == "keep;\n"
        assert ready(store)["status"] == "True"

    async def test_the_kept_script_survives_an_operator_restart(self, world, store, kube, clock, dataplane):
        store.edit("Mailbox", NS, "ana", {"spec": {"sieve": BROKEN}})
        fresh = Reconciler(kube, after=statuspoll.StatusWriter(dataplane, clock=clock), debounce=0)
        await fresh.run(NS, DOMAIN)
        assert directory(store)[ANA]["sieve"] == GOOD

    async def test_an_unsupported_extension_is_invalid_too(self, world, store):
        store.edit("Mailbox", NS, "ana", {"spec": {"sieve": 'require "enotify";\n'}})
        await world.run(NS, DOMAIN)
        cond = ready(store)
        assert cond["reason"] == "InvalidSieve" and "enotify" in cond["message"]


class TestRulesStatus:
    async def test_status_shows_what_the_mailstore_runs(self, world, store, dataplane):
        dataplane.mailstore["mailboxes"][ANA]["rules"] = {
            "adminScript": True, "autoReply": True, "userScript": "personal", "errors": 2,
            "lastError": {"time": "2026-11-27T05:59:00Z", "script": "personal",
                          "message": "line 2, column 1: too many actions"}}
        await world.run(NS, DOMAIN)
        rules = store.one("Mailbox", NS, "ana")["status"]["rules"]
        assert rules == dataplane.mailstore["mailboxes"][ANA]["rules"]

    async def test_a_mailbox_without_rules(self, world, store, dataplane):
        store.edit("Mailbox", NS, "ana", {"spec": {"sieve": None, "autoReply": None}})
        await world.run(NS, DOMAIN)
        assert "sieve" not in directory(store)[ANA] and "autoReply" not in directory(store)[ANA]
        assert store.one("Mailbox", NS, "ana")["status"]["rules"] == {"adminScript": False, "autoReply": False,
                                                                      "errors": 0}
