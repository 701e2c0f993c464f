"""The mail rules' API fields against the real API server (issue 14): what it
accepts, defaults and refuses, and the operator keeping the previous valid
Sieve script with ``InvalidSieve`` on the Mailbox, through HttpKube."""
from __future__ import annotations

import asyncio
import base64

import yaml
from envkit import wait_for

from correo_operator import statuspoll
from correo_operator.kube import Connection, HttpKube
from correo_operator.reconcile import Reconciler
from correo_server import passwords

GOOD = 'require "fileinto";\nif header :contains "subject" "[news]" { fileinto "News"; }\n'
BROKEN = 'require "fileinto";\nif header :contains "subject" "[news]" {\n  fileinto "News"\n}\n'


def domain(**spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "example-com"},
            "spec": {"domain": "example.com", "aliasDomains": ["example.net"], **spec}}


def mailbox(**spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "ana"},
            "spec": {"address": "ana@example.com", "passwordSecretRef": {"name": "ana-password"}, **spec}}


def apply(kubectl, namespace, *objs, check=True):
    return kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objs),
                       check=check)


class TestTheServerTakesTheFields:
    def test_defaults_and_unquoted_times(self, kubectl, namespace):
        apply(kubectl, namespace, domain(catchAll="ana@example.net"))
        # as a user writes it: an unquoted RFC 3339 time
        kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=(
            "apiVersion: correo.dev/v1alpha1\nkind: Mailbox\nmetadata: {name: ana}\nspec:\n"
            "  address: ana@example.com\n  passwordSecretRef: {name: ana-password}\n"
            "  autoReply:\n    body: Away.\n    start: 2027-07-01T00:00:00Z\n"
            "  sieve: |\n" + "".join(f"    {line}\n" for line in GOOD.splitlines())))
        md = kubectl.json("get", "md", "example-com", "-n", namespace)
        assert md["spec"]["recipientDelimiter"] == "+" and md["spec"]["catchAll"] == "ana@example.net"
        mbx = kubectl.json("get", "mbx", "ana", "-n", namespace)
        assert mbx["spec"]["autoReply"] == {"body": "Away.", "start": "2027-07-01T00:00:00Z", "enabled": True,
                                            "intervalDays": 7}
        assert mbx["spec"]["sieve"] == GOOD

    def test_refusals_say_why(self, kubectl, namespace):
        out = apply(kubectl, namespace, domain(catchAll="ana@elsewhere.org"), check=False)
        assert out.returncode != 0 and "catchAll must be an address of the domain" in out.stderr
        out = apply(kubectl, namespace, domain(recipientDelimiter="@"), check=False)
        assert out.returncode != 0 and "spec.recipientDelimiter" in out.stderr
        out = apply(kubectl, namespace, mailbox(autoReply={"body": "x", "intervalDays": 0}), check=False)
        assert out.returncode != 0 and "spec.autoReply.intervalDays" in out.stderr
        out = apply(kubectl, namespace, mailbox(autoReply={"subject": "no body"}), check=False)
        assert out.returncode != 0 and "spec.autoReply.body" in out.stderr

    def test_kubectl_explain_tells_how_to_use_them(self, kubectl):
        out = kubectl.run("explain", "mailbox.spec.autoReply").stdout
        assert "intervalDays" in out and "once per sender" in " ".join(out.split())
        assert "InvalidSieve" in " ".join(kubectl.run("explain", "mailbox.spec.sieve").stdout.split())


class FakeDataPlane:
    """The services' /status, as if the mailstore had loaded the mailbox."""

    def __init__(self) -> None:
        self.mailstore = {"service": "mailstore", "ready": True, "time": "2026-11-27T06:00:00Z", "mailboxes": {
            "ana@example.com": {"messages": 0, "bytes": 0, "quotaBytes": 1 << 30, "lastDelivery": None,
                                "rules": {"adminScript": True, "autoReply": False, "errors": 0}}}}

    async def __call__(self, url: str):
        return self.mailstore if "-mailstore-internal." in url else None


def test_the_operator_keeps_the_previous_script_and_says_invalid_sieve(kubectl, control_plane, namespace):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ana-password"},
              "stringData": {"password": passwords.hash_password("ana-pw", b"envtest-salt-0000")}}
    apply(kubectl, namespace, domain(), secret, mailbox(sieve=GOOD))

    def directory_script() -> str | None:
        doc = kubectl.json("get", "secret", "example-com-directory", "-n", namespace)
        entries = yaml.safe_load(base64.b64decode(doc["data"]["directory.yaml"]))["mailboxes"]
        return entries[0].get("sieve")

    async def passes(n: int) -> None:
        async with HttpKube(Connection.from_kubeconfig(str(control_plane.kubeconfig))) as kube:
            r = Reconciler(kube, after=statuspoll.StatusWriter(FakeDataPlane()), debounce=0)
            for _ in range(n):
                await r.run(namespace, "example-com")

    asyncio.run(passes(1))
    assert directory_script() == GOOD
    apply(kubectl, namespace, mailbox(sieve=BROKEN))
    asyncio.run(passes(1))
    assert directory_script() == GOOD  # the previous valid script stays in force
    ready = wait_for(lambda: next((c for c in kubectl.json("get", "mbx", "ana", "-n", namespace)
                                   .get("status", {}).get("conditions", []) if c["type"] == "Ready"), None),
                     what="the Mailbox's Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSieve")
    assert "line 4, column 1" in ready["message"] and "previous valid script still runs" in ready["message"]
    wide = kubectl.run("get", "mbx", "ana", "-n", namespace, "-o", "wide").stdout
    assert "InvalidSieve" in wide
