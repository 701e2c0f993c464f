"""The operator's logs: JSON lines, each line about an object naming its
namespace and name (correo's own lines and kopf's), and never a password."""
from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from apidouble import DoubleKube, Store
from opkit import NS, FakeDataPlane, Clock, mailbox, maildomain

from correo_operator import kopfapp, loading, statuspoll
from correo_operator.reconcile import Reconciler


@pytest.fixture
def json_logs():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    kopfapp.setup_logging("info", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_reconcile_lines_are_json_with_namespace_and_name_and_no_password(json_logs):
    store = Store(crds=loading.crds())
    store.put(maildomain())
    store.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-password", "namespace": NS},
               "stringData": {"password": "correct-horse-battery"}})
    store.put(mailbox("alice", "alice@example.com"))
    await Reconciler(DoubleKube(store), after=statuspoll.StatusWriter(FakeDataPlane(), clock=Clock()),
                     debounce=0).run(NS, "example-com")
    records = lines(json_logs)
    assert records, "the pass logged"
    for rec in records:
        assert rec["namespace"] == NS and rec["name"] == "example-com", rec
        assert rec["service"] == "operator" and "timestamp" in rec and "level" in rec
    assert {"applied", "reconciled"} <= {r["event"] for r in records}
    assert "correct-horse-battery" not in json_logs.getvalue()


def test_kopf_lines_carry_the_object_they_are_about(json_logs):
    # kopf's per-object logger puts the object reference in the record's extra.
    logging.getLogger("kopf.objects").info("Handler 'reconcile-on-create' succeeded.", extra={
        "k8s_ref": {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "name": "example-com",
                    "uid": "u", "namespace": NS}, "k8s_skip": False})
    (rec,) = lines(json_logs)
    assert (rec["namespace"], rec["name"], rec["kind"]) == (NS, "example-com", "MailDomain")
    assert rec["event"] == "Handler 'reconcile-on-create' succeeded."
