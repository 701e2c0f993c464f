"""The API double behaves like an API server where the operator relies on it
(otherwise the operator tests would prove nothing), and ``HttpKube`` speaks
the real wire protocol to it."""
from __future__ import annotations

import asyncio
import os

import pytest
from apidouble import ApiError, DoubleKube, Server, Store
from opkit import NS, FakeDataPlane, Clock, mailbox, maildomain, password_secret

from correo_operator import loading, reconcile, statuspoll
from correo_operator import kube as kubemod
from correo_operator.kube import Connection, HttpKube


def cm(name: str, data: dict, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, **meta},
            "data": data}


class TestVersionsAndGenerations:
    async def test_a_no_op_apply_keeps_the_resource_version(self, store, kube):
        first = await kube.apply(cm("a", {"k": "v"}))
        again = await kube.apply(cm("a", {"k": "v"}))
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        changed = await kube.apply(cm("a", {"k": "w"}))
        assert int(changed["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    def test_generation_moves_with_the_spec_only(self, store):
        d = store.put(maildomain())
        assert d["metadata"]["generation"] == 1
        d = store.edit("MailDomain", NS, "example-com", {"metadata": {"labels": {"team": "mail"}}})
        assert d["metadata"]["generation"] == 1
        d = store.edit("MailDomain", NS, "example-com", {"status": {"mailboxes": 3}}, sub="status")
        assert d["metadata"]["generation"] == 1 and d["status"]["mailboxes"] == 3
        d = store.edit("MailDomain", NS, "example-com", {"spec": {"hostname": "mx.example.com"}})
        assert d["metadata"]["generation"] == 2

    def test_custom_resources_get_their_schema_defaults_and_status_only_through_the_subresource(self, store):
        d = store.put({**maildomain(), "status": {"mailboxes": 9}})
        assert d["spec"]["reclaimPolicy"] == "Retain" and d["spec"]["queue"]["retry"]["warnAfterSeconds"] == 14400
        assert "status" not in d
        d = store.edit("MailDomain", NS, "example-com", {"status": {"mailboxes": 9}})
        assert "status" not in d

    def test_secret_string_data_is_folded_into_data(self, store):
        s = store.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS},
                       "stringData": {"password": "x"}})
        assert s["data"] == {"password": "eA=="} and "stringData" not in s


class TestServerSideApply:
    async def test_a_field_dropped_from_the_applied_configuration_is_removed(self, store, kube):
        await kube.apply(cm("a", {"one": "1", "two": "2"}))
        live = await kube.apply(cm("a", {"one": "1"}))
        assert live["data"] == {"one": "1"}

    async def test_fields_of_another_manager_stay(self, store, kube):
        await kube.apply(cm("a", {"one": "1"}))
        store.edit("ConfigMap", NS, "a", {"data": {"mine": "yes"}, "metadata": {"labels": {"x": "y"}}})
        live = await kube.apply(cm("a", {"one": "2"}))
        assert live["data"] == {"one": "2", "mine": "yes"} and live["metadata"]["labels"] == {"x": "y"}

    def test_a_conflict_without_force_is_409_and_force_takes_the_field(self, store):
        res = store.res("", "configmaps")
        store.apply(res, NS, "a", cm("a", {"k": "mine"}), manager="gitops")
        with pytest.raises(ApiError) as err:
            store.apply(res, NS, "a", cm("a", {"k": "theirs"}), manager="correo")
        assert err.value.code == 409 and "gitops" in err.value.message
        store.apply(res, NS, "a", cm("a", {"k": "theirs"}), manager="correo", force=True)
        live = store.one("ConfigMap", NS, "a")
        owners = {m["manager"]: m["fieldsV1"] for m in live["metadata"]["managedFields"]}
        assert owners["correo"] == {"f:data": {"f:k": {}}} and "gitops" not in owners

    async def test_managed_fields_use_the_fields_v1_format(self, store, kube):
        await kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": NS},
                          "spec": {"ports": [{"name": "smtp", "port": 25}], "selector": {"a": "b"}}})
        (entry,) = store.one("Service", NS, "s")["metadata"]["managedFields"]
        assert entry["manager"] == "correo" and entry["operation"] == "Apply"
        assert entry["fieldsV1"]["f:spec"]["f:ports"] == {'k:{"name":"smtp"}': {".": {}}}
        assert reconcile.owned_paths(store.one("Service", NS, "s")) == {("spec", "ports"), ("spec", "selector", "a")}


class TestDeletion:
    def test_finalizers_hold_an_object_and_none_may_be_added_while_it_goes(self, store):
        store.put(cm("a", {}, finalizers=["example.org/hold"]))
        store.remove("ConfigMap", NS, "a")
        held = store.one("ConfigMap", NS, "a")
        assert held["metadata"]["deletionTimestamp"]
        with pytest.raises(ApiError) as err:
            store.edit("ConfigMap", NS, "a", {"metadata": {"finalizers": ["example.org/hold", "another/one"]}})
        assert err.value.code == 422
        store.edit("ConfigMap", NS, "a", {"metadata": {"finalizers": None}})
        assert store.one("ConfigMap", NS, "a") is None

    def test_owners_take_their_dependents_with_them_unless_orphaned(self, store):
        owner = store.put(cm("owner", {}))
        ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]
        store.put(cm("child", {}, ownerReferences=ref))
        grandchild_ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "child",
                           "uid": store.one("ConfigMap", NS, "child")["metadata"]["uid"]}]
        store.put(cm("grandchild", {}, ownerReferences=grandchild_ref))
        store.remove("ConfigMap", NS, "owner")
        assert store.find("ConfigMap", NS) == []

        owner = store.put(cm("owner", {}))
        ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]
        store.put(cm("child", {}, ownerReferences=ref))
        store.delete(store.res("", "configmaps"), NS, "owner", propagation="Orphan", record=False)
        assert "ownerReferences" not in store.one("ConfigMap", NS, "child")["metadata"]


class TestWire:
    async def test_http_kube_round_trip(self, store):
        seen: list[tuple[str, str]] = []
        async with Server(store) as server:
            async with HttpKube(Connection(server=server.url, token="t"),
                                observer=lambda v, r: seen.append((v, r))) as k:
                assert await k.get("v1", "ConfigMap", NS, "nope") is None
                created = await k.apply(cm("a", {"k": "v"}, labels={"app": "x"}))
                assert created["metadata"]["uid"]
                assert await k.create(cm("a", {"k": "other"})) is None  # exists: untouched
                assert [o["metadata"]["name"] for o in await k.list("v1", "ConfigMap", NS, labels={"app": "x"})] == ["a"]
                assert await k.list("v1", "ConfigMap", NS, labels={"app": "y"}) == []
                md = store.put(maildomain())
                patched = await k.patch_status("correo.dev/v1alpha1", "MailDomain", NS, "example-com",
                                               {"mailboxes": 2})
                assert patched["status"]["mailboxes"] == 2
                assert await k.patch_status("correo.dev/v1alpha1", "MailDomain", NS, "gone", {"mailboxes": 1}) is None
                await k.post_event(md, type="Normal", reason="Tested", message="hello")
                assert await k.delete("v1", "ConfigMap", NS, "a") is True
                assert await k.delete("v1", "ConfigMap", NS, "a") is False
        (event,) = store.find("Event", NS)
        assert event["reason"] == "Tested" and event["involvedObject"]["uid"] == md["metadata"]["uid"]
        assert ("patch", "correo.dev/maildomains/status") in seen and ("create", "/events") in seen

    async def test_http_kube_pages_through_long_lists(self, store):
        for i in range(1203):
            store.put(cm(f"c{i:04d}", {}))
        async with Server(store) as server, HttpKube(Connection(server=server.url)) as k:
            items = await k.list("v1", "ConfigMap", NS)
        assert len(items) == 1203 and len({i["metadata"]["name"] for i in items}) == 1203
        assert len([r for r in store.requests if r.verb == "list"]) == 3

    async def test_forbidden_calls_surface_as_api_errors(self):
        store = Store(crds=loading.crds(), rbac={("", "configmaps", "patch")})
        async with Server(store) as server, HttpKube(Connection(server=server.url)) as k:
            with pytest.raises(kubemod.ApiError) as err:
                await k.apply(cm("a", {}))  # creating by apply needs "create" too
        assert err.value.status == 403
        assert [(d.verb, d.resource) for d in store.denied] == [("create", "configmaps")]

    async def test_reconcile_over_http_matches_reconcile_in_memory(self):
        results = []
        for over_http in (False, True):
            store = Store(crds=loading.crds())
            store.put(maildomain())
            for n in ("alice", "bob"):
                store.put(password_secret(f"{n}-password", n))
                store.put(mailbox(n, f"{n}@example.com"))
            writer = statuspoll.StatusWriter(FakeDataPlane(), clock=Clock())
            if over_http:
                async with Server(store) as server, HttpKube(Connection(server=server.url)) as k:
                    r = reconcile.Reconciler(k, after=writer, debounce=0)
                    first = await r.run(NS, "example-com")
                    mark = len(store.requests)
                    await r.run(NS, "example-com")
            else:
                r = reconcile.Reconciler(DoubleKube(store), after=writer, debounce=0)
                first = await r.run(NS, "example-com")
                mark = len(store.requests)
                await r.run(NS, "example-com")
            results.append((sorted(first.applied), store.writes(since=mark),
                            sorted((o["kind"], o["metadata"]["name"]) for o in first.children)))
        assert results[0] == results[1]
        assert results[1][1] == []


class TestConnection:
    def test_a_kubeconfig_is_read(self, tmp_path):
        path = kubemod.write_kubeconfig("http://127.0.0.1:6443", str(tmp_path / "kc.yaml"), token="abc",
                                        namespace="mail")
        conn = Connection.from_kubeconfig(path)
        assert conn.server == "http://127.0.0.1:6443" and conn.bearer() == "abc"
        assert conn.default_namespace == "mail"

    def test_in_cluster_credentials_and_a_rotated_token(self, tmp_path, monkeypatch):
        (tmp_path / "token").write_text("first\n")
        (tmp_path / "ca.crt").write_text("")
        (tmp_path / "namespace").write_text("correo-system")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
        conn = Connection.in_cluster(tmp_path)
        assert conn.server == "https://10.0.0.1:443" and conn.default_namespace == "correo-system"
        assert conn.bearer() == "first"
        (tmp_path / "token").write_text("second\n")
        os.utime(tmp_path / "token", (1, 1))  # a different mtime, as kubelet's atomic swap gives
        assert conn.bearer() == "second"


class TestWatch:
    async def test_a_watch_replays_from_a_resource_version_and_410s_when_too_old(self, store):
        store.put(cm("a", {"k": "1"}))
        rv = store.rv
        store.edit("ConfigMap", NS, "a", {"data": {"k": "2"}})
        queue = store.subscribe(store.res("", "configmaps"), NS, None, rv)
        event = queue.get_nowait()
        assert event["type"] == "MODIFIED" and event["object"]["data"] == {"k": "2"}
        store.history_floor = store.rv + 1
        gone = store.subscribe(store.res("", "configmaps"), NS, None, rv).get_nowait()
        assert gone["type"] == "ERROR" and gone["object"]["code"] == 410
        store.remove("ConfigMap", NS, "a")
        assert (await asyncio.wait_for(queue.get(), 1))["type"] == "DELETED"
