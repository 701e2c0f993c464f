"""Placement of Mailboxes on mailstore shards: pins win, recorded shards are
kept (adding shards moves no mailbox), new mailboxes spread by rendezvous
hashing; and what render writes (directory, objects) for a domain with shards."""
from __future__ import annotations

import collections

import kubernetes_validate
import pytest

from correo_operator import placement, render, status as statusmod
from correo_operator import model
from correo_server import config as cfgmod
from correo_server import directory as dirmod

K8S = "1.36.0"
UID = "0b7a3d2e-1111-4c5d-9e8f-123456789abc"


def maildomain(**spec):
    return model.MailDomain.from_object({
        "apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
        "metadata": {"name": "acme", "namespace": "mail", "uid": UID, "generation": 1},
        "spec": {"domain": "acme.test", **spec}})


def mailbox(local, **spec):
    return model.Mailbox.from_object({
        "apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
        "metadata": {"name": local, "namespace": "mail"},
        "spec": {"address": f"{local}@acme.test", "passwordSecretRef": {"name": "pw"}, **spec}})


ADDRESSES = [f"user{i}@acme.test" for i in range(3000)]


def test_rendezvous_spreads_mailboxes_evenly_over_the_shards():
    counts = collections.Counter(placement.rendezvous(a, 3) for a in ADDRESSES)
    assert set(counts) == {0, 1, 2}
    assert all(850 < n < 1150 for n in counts.values()), counts


def test_adding_a_shard_only_ever_takes_new_mailboxes_to_it():
    for a in ADDRESSES:
        before, after = placement.rendezvous(a, 3), placement.rendezvous(a, 4)
        assert after in (before, 3)


def test_a_recorded_shard_is_kept_when_shards_are_added():
    recorded = {a: placement.rendezvous(a, 3) for a in ADDRESSES[:500]}
    for a, shard in recorded.items():
        p = placement.place(a, 5, recorded=shard)
        assert (p.shard, p.reason) == (shard, "Recorded")


def test_a_pin_wins_and_an_impossible_pin_is_explained():
    assert placement.place("a@acme.test", 3, pin=2).shard == 2
    assert placement.place("a@acme.test", 3, pin=2, recorded=0).wanted == 2  # a move (test_move_decide)
    p = placement.place("a@acme.test", 3, pin=7, recorded=1)
    assert (p.shard, p.reason) == (1, "PinOutOfRange")
    assert "spec.shard 7 does not exist" in p.message


def test_a_mailbox_of_a_removed_shard_is_placed_again_and_says_why():
    p = placement.place("a@acme.test", 2, recorded=4)
    assert p.reason == "ShardRemoved" and p.shard in (0, 1) and "shard 4 no longer exists" in p.message


def test_a_directory_from_before_shards_keeps_every_mailbox_on_shard_0():
    domain1 = maildomain()
    mbs = [mailbox(f"user{i}") for i in range(30)]
    text = dirmod.dump(render.directory_entries(domain1, mbs, {}))
    assert "shard" not in text  # one shard: the directory is as before
    previous = placement.shards_in_directory(text)
    entries = render.directory_entries(maildomain(mailstore={"shards": 3}), mbs, {}, previous_shards=previous)
    assert {e.shard_id for e in entries} == {0}
    # a mailbox added now is spread
    newcomers = render.directory_entries(maildomain(mailstore={"shards": 3}), [mailbox(f"new{i}") for i in range(30)],
                                         {}, previous_shards=previous)
    assert {e.shard_id for e in newcomers} == {0, 1, 2}


def test_the_directory_records_each_mailbox_s_shard_and_the_pin():
    domain = maildomain(mailstore={"shards": 3})
    entries = render.directory_entries(domain, [mailbox("ana", shard=2), mailbox("bo")], {})
    text = dirmod.dump(entries)
    directory = dirmod.parse(text)
    assert directory.lookup("ana@acme.test").shard_id == 2
    assert directory.lookup("bo@acme.test").shard_id == placement.rendezvous("bo@acme.test", 3)
    assert placement.shards_in_directory(text)["ana@acme.test"] == 2


def test_rendered_objects_for_three_shards_are_strictly_valid():
    domain = maildomain(mailstore={"shards": 3}, tls={"secretName": "acme-tls"})
    objs = render.render(domain, [mailbox("ana"), mailbox("bo")], {})
    for obj in objs:
        kubernetes_validate.validate(obj, K8S, strict=True)
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    sts = by[("StatefulSet", "acme-mailstore")]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "acme-mailstore-internal"
    assert by[("Service", "acme-mailstore-internal")]["spec"]["clusterIP"] == "None"
    proxy = by[("Deployment", "acme-proxy")]
    assert proxy["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["serve", "proxy"]
    public = by[("Service", "acme-mailstore")]
    assert public["spec"]["selector"]["app.kubernetes.io/component"] == "proxy"
    cfg = cfgmod.parse(by[("ConfigMap", "acme-config")]["data"]["correo.yaml"])
    assert [s.host for s in cfg.mailstore.shards] == [
        f"acme-mailstore-{i}.acme-mailstore-internal.mail.svc" for i in range(3)]
    assert cfg.proxy is not None and cfg.mailstore.proxy_secret_file == "proxy/secret"
    # the proxy credential reaches the shards and the proxy, nobody else
    for kind, name in (("StatefulSet", "acme-mailstore"), ("Deployment", "acme-proxy"),
                       ("StatefulSet", "acme-queue"), ("Deployment", "acme-relay")):
        sources = by[(kind, name)]["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
        has = any((s.get("secret") or {}).get("name") == "acme-proxy" for s in sources)
        assert has == (name in ("acme-mailstore", "acme-proxy")), name
    # shards take client connections from the proxy only
    pol = by[("NetworkPolicy", "acme-mailstore")]
    assert pol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"


def test_one_shard_renders_as_before_no_proxy():
    objs = render.render(maildomain(), [mailbox("ana")], {})
    assert not [o for o in objs if "proxy" in o["metadata"]["name"]]
    cfg = cfgmod.parse(next(o for o in objs if o["kind"] == "ConfigMap")["data"]["correo.yaml"])
    assert cfg.mailstore.shards == () and cfg.proxy is None


def test_mailbox_status_shows_its_shard_and_domain_status_which_shards_are_down():
    domain = maildomain(mailstore={"shards": 3})
    docs = ({"ready": True, "mailboxes": {"ana@acme.test": {"messages": 1, "bytes": 10}}}, None,
            {"ready": True, "mailboxes": {}})
    observed = statusmod.Observed(mailstore=statusmod.merge_shards(docs), mailstore_shards=docs,
                                  shards={"ana@acme.test": 0})
    now = statusmod.now_utc()
    st = statusmod.mailbox_status(mailbox("ana"), domain, observed=observed, now=now)
    assert st["shard"] == 0 and st["usage"]["messages"] == 1
    dst = statusmod.domain_status(domain, [mailbox("ana")], observed=observed, now=now)
    cond = next(c for c in dst["conditions"] if c["type"] == "MailstoreAvailable")
    assert (cond["status"], cond["reason"]) == ("False", "ShardsUnavailable") and "shard(s) 1 of 3" in cond["message"]
    assert dst["shards"][1] == {"shard": 1, "ready": False, "mailboxes": 0}


@pytest.mark.parametrize("spec, field", [({"mailstore": {"shards": 0}}, "spec.mailstore.shards"),
                                         ({"queue": {"replicas": 33}}, "spec.queue.replicas")])
def test_the_crd_refuses_impossible_counts(spec, field):
    from correo_operator import loading
    obj = {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "acme"},
           "spec": {"domain": "acme.test", **spec}}
    assert any(path == field for path, _ in loading.validate_object(obj))


def test_a_mailbox_pin_must_be_a_shard_number():
    from correo_operator import loading
    obj = {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "ana"},
           "spec": {"address": "ana@acme.test", "passwordSecretRef": {"name": "pw"}, "shard": -1}}
    assert any(path == "spec.shard" for path, _ in loading.validate_object(obj))
