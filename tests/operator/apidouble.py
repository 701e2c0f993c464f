"""A Kubernetes API double: an in-memory API server for the operator's tests.

It keeps what the operator relies on from a real API server:

* ``metadata.resourceVersion`` (one counter for the whole store; a write that
  changes nothing keeps it), ``uid``, ``creationTimestamp``, and
  ``generation``, bumped only when something outside ``metadata`` and
  ``status`` changes;
* CRD schema defaults on custom resources, and the ``status`` subresource
  (writes to the object ignore ``status``; writes to ``/status`` touch nothing else);
* server-side apply per field manager: each manager owns the leaf fields it
  applied (lists are atomic), re-applying without a field removes it unless
  another manager owns it, ``force`` takes fields over; ``managedFields`` is
  published in the FieldsV1 format.  Merge patches and creates make their
  manager own what they changed (``Update`` entries);
* ``finalizers`` and ``deletionTimestamp``: deleting an object with
  finalizers only marks it; it goes when the last finalizer is removed;
  no new finalizer may be added then;
* owner references with garbage collection (background and orphan);
* ``stringData`` of Secrets folded into ``data``;
* list with label selectors and ``limit``/``continue``, watch streams from a
  resourceVersion (410 Gone when too old), discovery (``/api``, ``/apis``);
* optional RBAC: with ``rbac`` set, a request whose (group, resource, verb) is
  not granted gets 403, as a real server would (server-side apply that
  creates needs ``create`` too).

Every request is recorded (:attr:`Store.requests`), so tests can count writes.

:class:`DoubleKube` implements ``correo_operator.kube.Kube`` in memory;
:func:`serve` puts the same store behind HTTP, so that ``HttpKube`` and kopf
itself run against it.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from aiohttp import web

SYSTEM_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink", "generateName"}
WRITE_VERBS = {"create", "patch", "update", "delete", "deletecollection"}


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


@dataclass(frozen=True)
class Res:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status_sub: bool = False
    generation: bool = False
    singular: str = ""
    short: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    schema: Any = None  # openAPIV3Schema for defaulting (CRDs)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTINS = [
    Res("", "v1", "Namespace", "namespaces", namespaced=False, status_sub=True),
    Res("", "v1", "ConfigMap", "configmaps"),
    Res("", "v1", "Secret", "secrets"),
    Res("", "v1", "Service", "services", status_sub=True),
    Res("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", status_sub=True),
    Res("", "v1", "Pod", "pods", status_sub=True),
    Res("", "v1", "Event", "events"),
    Res("", "v1", "ServiceAccount", "serviceaccounts"),
    Res("apps", "v1", "Deployment", "deployments", status_sub=True, generation=True),
    Res("apps", "v1", "StatefulSet", "statefulsets", status_sub=True, generation=True),
    Res("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", status_sub=True, generation=True),
    Res("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", generation=True),
    Res("networking.k8s.io", "v1", "Ingress", "ingresses", status_sub=True, generation=True),
    Res("events.k8s.io", "v1", "Event", "events"),
    Res("coordination.k8s.io", "v1", "Lease", "leases"),
    Res("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        namespaced=False, status_sub=True, generation=True),
]


@dataclass
class Request:
    verb: str
    group: str
    resource: str  # plural, with "/status" for the subresource
    namespace: str | None
    name: str | None
    manager: str | None = None


# ---------------------------------------------------------------------------
# Field paths (lists are atomic leaves)
# ---------------------------------------------------------------------------

Path = tuple[str, ...]


def leaves(obj: Any, prefix: Path = (), *, top: bool = True) -> set[Path]:
    out: set[Path] = set()
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            if top and k in ("apiVersion", "kind"):
                continue
            if top and k == "metadata" and isinstance(v, dict):
                for mk, mv in v.items():
                    if mk not in SYSTEM_META:
                        out |= leaves(mv, ("metadata", mk), top=False)
                continue
            out |= leaves(v, prefix + (k,), top=False)
        return out
    if prefix:
        out.add(prefix)
    return out


def get_path(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


_MISSING = object()


def set_path(obj: dict, path: Path, value: Any) -> None:
    for key in path[:-1]:
        nxt = obj.get(key)
        if not isinstance(nxt, dict):
            nxt = obj[key] = {}
        obj = nxt
    obj[path[-1]] = copy.deepcopy(value)


def del_path(obj: dict, path: Path) -> None:
    chain = []
    cur: Any = obj
    for key in path[:-1]:
        if not isinstance(cur, dict) or key not in cur:
            return
        chain.append((cur, key))
        cur = cur[key]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    # prune the maps the removal emptied (never the top-level sections)
    for parent, key in reversed(chain[1:]):
        if isinstance(parent.get(key), dict) and not parent[key]:
            del parent[key]
        else:
            break


def fields_v1(paths: Iterable[Path], obj: dict) -> dict:
    """FieldsV1 as a real server writes it: ``f:`` for fields; a list of named items
    gets ``k:{"name":...}`` entries, a list of scalars ``v:`` entries."""
    out: dict = {}
    for path in sorted(paths):
        node = out
        for key in path:
            node = node.setdefault(f"f:{key}", {})
        value = get_path(obj, path)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "name" in item:
                    node.setdefault(f'k:{json.dumps({"name": item["name"]}, separators=(",", ":"))}', {".": {}})
                elif not isinstance(item, (dict, list)):
                    node.setdefault(f"v:{json.dumps(item)}", {})
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def schema_defaults(schema: dict | None, value: Any) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = schema_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [schema_defaults(schema["items"], v) for v in value]
    return value


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    out = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "==" in part:
            k, v = part.split("==", 1)
            out.append((k.strip(), "=", v.strip()))
        elif "=" in part:
            k, v = part.split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        elif part.startswith("!"):
            out.append((part[1:], "!", None))
        else:
            out.append((part, "exists", None))
    return out


def selector_matches(selector: list, labels: dict | None) -> bool:
    labels = labels or {}
    for key, op, value in selector:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "!" and key in labels:
            return False
        if op == "exists" and key not in labels:
            return False
    return True


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------

Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name


@dataclass
class Owned:
    operation: str  # Apply | Update
    paths: set[Path] = field(default_factory=set)
    time: str = ""


class Store:
    def __init__(self, crds: Iterable[dict] = (), *, rbac: set[tuple[str, str, str]] | None = None) -> None:
        self.resources: dict[tuple[str, str], Res] = {}  # (group, plural) -> Res
        for res in BUILTINS:
            self.resources[(res.group, res.plural)] = res
        self.objects: dict[Key, dict] = {}
        # (key, manager, scope) -> Owned; scope "" for the object, "status" for the subresource
        self.owners: dict[Key, dict[tuple[str, str], Owned]] = {}
        self._rv = itertools.count(1000)
        self.rv = 999
        self.history: list[tuple[int, str, tuple[str, str], str, dict]] = []
        self.history_floor = 0  # watches from older resourceVersions get 410 Gone
        self._watchers: list[tuple[tuple[str, str], str | None, list, asyncio.Queue]] = []
        self.requests: list[Request] = []
        self.rbac = rbac
        self.denied: list[Request] = []
        for crd in crds:
            self.create(self.res("apiextensions.k8s.io", "customresourcedefinitions"), None, crd, record=False)

    # -- resources -----------------------------------------------------------
    def res(self, group: str, plural: str) -> Res:
        try:
            return self.resources[(group, plural)]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{plural})")

    def res_for(self, api_version: str, kind: str) -> Res:
        for res in self.resources.values():
            if res.api_version == api_version and res.kind == kind:
                return res
        raise ApiError(404, "NotFound", f"no kind {kind} in {api_version}")

    def _register_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            res = Res(spec["group"], version["name"], names["kind"], names["plural"],
                      namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                      status_sub="status" in (version.get("subresources") or {}), generation=True,
                      singular=names.get("singular", ""), short=tuple(names.get("shortNames") or ()),
                      categories=tuple(names.get("categories") or ()),
                      schema=(version.get("schema") or {}).get("openAPIV3Schema"))
            self.resources[(res.group, res.plural)] = res

    # -- bookkeeping -------------------------------------------------------------
    def record(self, verb: str, res: Res, sub: str | None, ns: str | None, name: str | None,
               manager: str | None = None, *, also: Iterable[str] = ()) -> None:
        resource = res.plural + (f"/{sub}" if sub else "")
        req = Request(verb, res.group, resource, ns, name, manager)
        if self.rbac is not None:
            for v in (verb, *also):
                if (res.group, resource, v) not in self.rbac:
                    self.denied.append(Request(v, res.group, resource, ns, name, manager))
                    raise ApiError(403, "Forbidden",
                                   f'{resource}.{res.group or "core"} "{name or ""}" is forbidden: '
                                   f'cannot {v} resource "{resource}" in API group "{res.group}"')
        self.requests.append(req)

    def writes(self, *, manager: str | None = None, since: int = 0) -> list[Request]:
        return [r for r in self.requests[since:] if r.verb in WRITE_VERBS
                and (manager is None or r.manager == manager)]

    def _key(self, res: Res, ns: str | None, name: str) -> Key:
        return (res.group, res.plural, ns if res.namespaced else "", name)

    def _emit(self, etype: str, res: Res, obj: dict) -> None:
        rv = int(obj["metadata"]["resourceVersion"]) if etype != "DELETED" else self.rv
        snap = obj  # stored objects are never changed in place: shared, not copied
        ns = obj["metadata"].get("namespace", "")
        self.history.append((rv, etype, (res.group, res.plural), ns, snap))
        for (gp, wns, sel, queue) in self._watchers:
            if gp == (res.group, res.plural) and (wns is None or wns == ns) \
                    and selector_matches(sel, obj["metadata"].get("labels")):
                queue.put_nowait({"type": etype, "object": snap})

    def _managed_fields(self, key: Key, obj: dict) -> list[dict]:
        out = []
        res = self.resources[(key[0], key[1])]
        for (manager, scope), owned in sorted(self.owners.get(key, {}).items()):
            if not owned.paths:
                continue
            entry = {"manager": manager, "operation": owned.operation, "apiVersion": res.api_version,
                     "time": owned.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(owned.paths, obj)}
            if scope:
                entry["subresource"] = scope
            out.append(entry)
        return out

    def _normalize(self, res: Res, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.kind == "Secret" and res.group == "" and obj.get("stringData"):
            data = obj.setdefault("data", {}) or {}
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
        obj.pop("stringData", None) if res.kind == "Secret" else None
        if res.schema:
            obj = schema_defaults(res.schema, obj)
        return obj

    def _content(self, res: Res, obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}

    def _commit(self, res: Res, key: Key, new: dict, old: dict | None) -> dict:
        """Store ``new`` if it differs from ``old``; bump resourceVersion and generation."""
        new["metadata"]["managedFields"] = self._managed_fields(key, new)
        if old is not None:
            if new == old:
                return old
            if res.generation and self._content(res, new) != self._content(res, old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self.rv = next(self._rv)
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = new
        if res.kind == "CustomResourceDefinition":
            self._register_crd(new)
        self._emit("ADDED" if old is None else "MODIFIED", res, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(res, key, "Background")
        return new

    # -- reads -------------------------------------------------------------------
    def get(self, res: Res, ns: str | None, name: str, *, record: bool = True) -> dict:
        if record:
            self.record("get", res, None, ns, name)
        obj = self.objects.get(self._key(res, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural}.{res.group or "core"} "{name}" not found')
        return obj

    def list(self, res: Res, ns: str | None, selector: str | None = None, *, limit: int | None = None,
             cont: str | None = None, record: bool = True) -> dict:
        if record:
            self.record("list", res, None, ns, None)
        sel = parse_selector(selector)
        items = [o for k, o in sorted(self.objects.items())
                 if k[:2] == (res.group, res.plural) and (not ns or not res.namespaced or k[2] == ns)
                 and selector_matches(sel, o["metadata"].get("labels"))]
        start = int(base64.b64decode(cont).decode()) if cont else 0
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if limit and len(items) > start + limit:
            meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        return {"apiVersion": res.api_version, "kind": f"{res.kind}List", "metadata": meta, "items": items}

    # -- writes ------------------------------------------------------------------
    def create(self, res: Res, ns: str | None, obj: dict, *, manager: str = "unknown",
               record: bool = True, operation: str = "Update", _verb_recorded: bool = False) -> dict:
        meta = obj.get("metadata") or {}
        if not meta.get("name") and meta.get("generateName"):
            meta = {**meta, "name": meta["generateName"] + uuid.uuid4().hex[:5]}
        name = meta.get("name")
        ns = ns if res.namespaced else None
        if record and not _verb_recorded:
            self.record("create", res, None, ns, name, manager)
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if res.namespaced and meta.get("namespace") and ns and meta["namespace"] != ns:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the namespace of the request")
        key = self._key(res, ns, name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{res.plural}.{res.group or "core"} "{name}" already exists')
        new = self._normalize(res, {**obj, "metadata": dict(meta)})
        if res.status_sub and res.kind not in ("Namespace",):
            new.pop("status", None)
        m = new["metadata"]
        m["name"] = name
        if ns:
            m["namespace"] = ns
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = now_rfc3339()
        for k in ("deletionTimestamp", "resourceVersion", "managedFields"):
            m.pop(k, None)
        if res.generation:
            m["generation"] = 1
        self.owners[key] = {(manager, ""): Owned(operation, leaves({k: v for k, v in new.items() if k != "status"}),
                                                 now_rfc3339())}
        return self._commit(res, key, new, None)

    def apply(self, res: Res, ns: str | None, name: str, cfg: dict, *, manager: str, force: bool = False,
              sub: str | None = None) -> dict:
        ns = ns if res.namespaced else None
        key = self._key(res, ns, name)
        exists = key in self.objects
        self.record("patch", res, sub, ns, name, manager, also=() if exists else ("create",))
        if cfg.get("metadata", {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name in the URL")
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise ApiError(400, "BadRequest", "apiVersion and kind must be set in an apply configuration")
        cfg = self._normalize(res, cfg)
        if not exists:
            if sub:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            cfg.setdefault("metadata", {})["name"] = name
            return self.create(res, ns, cfg, manager=manager, operation="Apply", _verb_recorded=True)
        old = self.objects[key]
        if old["metadata"].get("deletionTimestamp") and sub is None:
            pass  # real servers allow applies to terminating objects; new finalizers are refused below
        scope = sub or ""
        if res.status_sub:
            cfg_part = {"status": cfg.get("status", {})} if sub == "status" else \
                {k: v for k, v in cfg.items() if k != "status"}
        else:
            cfg_part = cfg
        new_paths = leaves(cfg_part)
        if sub == "status":
            new_paths = {p for p in new_paths if p[0] == "status"}
        owners = self.owners.setdefault(key, {})
        me = (manager, scope)
        mine = owners.get(me, Owned("Apply"))
        others = {k: o for k, o in owners.items() if k != me}
        # A conflict: a field another manager owns, applied with a different value.
        conflicts = [(k, p) for k, o in others.items() for p in new_paths & o.paths
                     if get_path(old, p) != get_path(cfg_part, p)]
        if conflicts and not force:
            raise ApiError(409, "Conflict", "Apply failed with conflicts: " + "; ".join(
                f'conflict with "{k[0]}": .{".".join(p)}' for k, p in conflicts))
        new = copy.deepcopy(old)
        others_paths = set().union(*(o.paths for o in others.values())) if others else set()
        # Fields this manager applied before and no longer does go, unless someone else owns them.
        for p in sorted(mine.paths - new_paths, key=len, reverse=True):
            if not any(q[:len(p)] == p or p[:len(q)] == q for q in others_paths):
                del_path(new, p)
        for p in new_paths:
            set_path(new, p, get_path(cfg_part, p))
        self._check_update(res, old, new)  # before any bookkeeping changes
        for k, p in conflicts:  # forced: the others lose what was taken over
            owners[k].paths.discard(p)
        for o in others.values():
            o.paths = {p for p in o.paths if get_path(new, p) is not _MISSING}
        if mine.paths != new_paths or mine.operation != "Apply" or new != old:
            owners[me] = Owned("Apply", new_paths, now_rfc3339())
        return self._commit(res, key, new, old)

    def merge_patch(self, res: Res, ns: str | None, name: str, patch: dict, *, manager: str = "unknown",
                    sub: str | None = None) -> dict:
        """RFC 7386 (strategic merge patch is treated the same)."""
        rv = (patch.get("metadata") or {}).get("resourceVersion")

        def change(old: dict) -> dict:
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
            return merge_patch(old, patch)
        return self._patch(res, ns, name, change, manager=manager, sub=sub)

    def json_patch(self, res: Res, ns: str | None, name: str, ops: list, *, manager: str = "unknown",
                   sub: str | None = None) -> dict:
        """RFC 6902, with ``test`` (kopf tests metadata.resourceVersion: 422 when it moved)."""
        import jsonpatch

        def change(old: dict) -> dict:
            try:
                return jsonpatch.apply_patch(old, ops)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
        return self._patch(res, ns, name, change, manager=manager, sub=sub)

    def _patch(self, res: Res, ns: str | None, name: str, change, *, manager: str, sub: str | None) -> dict:
        ns = ns if res.namespaced else None
        self.record("patch", res, sub, ns, name, manager)
        key = self._key(res, ns, name)
        old = self.objects.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{res.plural}.{res.group or "core"} "{name}" not found')
        changed = change(old)  # both patch kinds build a new document
        if sub == "status":
            new = {**old, "metadata": dict(old["metadata"])}
            if changed.get("status"):
                new["status"] = changed["status"]
            else:
                new.pop("status", None)
        else:
            new = {k: v for k, v in changed.items() if not (res.status_sub and k == "status")}
            if res.status_sub and "status" in old:
                new["status"] = old["status"]
            meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in SYSTEM_META}
            new["metadata"] = {**meta, **{k: old["metadata"][k] for k in SYSTEM_META & old["metadata"].keys()}}
            new = self._normalize(res, new)
        self._check_update(res, old, new)
        self._take_changes(key, manager, "status" if sub == "status" else "", old, new)
        return self._commit(res, key, new, old)

    def _check_update(self, res: Res, old: dict, new: dict) -> None:
        self._check_finalizers(old, new)
        if res.kind == "StatefulSet" and res.group == "apps":
            mutable = {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                       "minReadySeconds"}
            changed = {k for k in (old.get("spec") or {}).keys() | (new.get("spec") or {}).keys()
                       if (old.get("spec") or {}).get(k) != (new.get("spec") or {}).get(k)}
            if changed - mutable:
                raise ApiError(422, "Invalid", f'StatefulSet.apps "{old["metadata"]["name"]}" is invalid: spec: '
                                               "Forbidden: updates to statefulset spec for fields other than "
                                               "'replicas', 'ordinals', 'template', 'updateStrategy', "
                                               "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                                               "are forbidden")

    def _check_finalizers(self, old: dict, new: dict) -> None:
        if old["metadata"].get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(422, "Forbidden", "metadata.finalizers: Forbidden: no new finalizers can be "
                                                 "added if the object is being deleted")

    def _take_changes(self, key: Key, manager: str, scope: str, old: dict, new: dict) -> None:
        changed = {p for p in leaves(new) | leaves(old) if get_path(old, p) != get_path(new, p)}
        if scope == "status":
            changed = {p for p in changed if p[0] == "status"}
        if not changed:
            return
        owners = self.owners.setdefault(key, {})
        for k, owned in owners.items():
            if k != (manager, scope):
                owned.paths -= changed
        mine = owners.setdefault((manager, scope), Owned("Update"))
        if mine.operation == "Apply":  # an Update by an applier is a separate entry in real servers
            mine = owners.setdefault((manager + "+update", scope), Owned("Update"))
        mine.paths |= {p for p in changed if get_path(new, p) is not _MISSING}
        mine.time = now_rfc3339()

    def delete(self, res: Res, ns: str | None, name: str, *, propagation: str = "Background",
               manager: str | None = None, record: bool = True) -> dict:
        ns = ns if res.namespaced else None
        if record:
            self.record("delete", res, None, ns, name, manager)
        key = self._key(res, ns, name)
        obj = self.objects.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural}.{res.group or "core"} "{name}" not found')
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(res, key, new, obj)
        return self._remove(res, key, propagation)

    def _remove(self, res: Res, key: Key, propagation: str) -> dict:
        obj = self.objects.pop(key)
        self.owners.pop(key, None)
        self.rv = next(self._rv)
        gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._emit("DELETED", res, gone)
        self._collect_garbage(obj["metadata"]["uid"], orphan=propagation == "Orphan")
        return gone

    def _collect_garbage(self, uid: str, *, orphan: bool) -> None:
        for key, obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs):
                continue
            res = self.resources[(key[0], key[1])]
            remaining = [r for r in refs if r.get("uid") != uid]
            if remaining or orphan:
                new = copy.deepcopy(obj)
                if remaining:
                    new["metadata"]["ownerReferences"] = remaining
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._commit(res, key, new, obj)
            elif key in self.objects:
                self.delete(res, key[2] or None, key[3], record=False)

    # -- watching ----------------------------------------------------------------
    def subscribe(self, res: Res, ns: str | None, selector: str | None, since: int | None) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        sel = parse_selector(selector)
        if since is not None:
            if since < self.history_floor:
                queue.put_nowait({"type": "ERROR", "object": ApiError(
                    410, "Expired", f"too old resource version: {since} ({self.history_floor})").status()})
                return queue
            for rv, etype, gp, ons, obj in self.history:
                if rv > since and gp == (res.group, res.plural) and (ns is None or ons == ns) \
                        and selector_matches(sel, obj["metadata"].get("labels")):
                    queue.put_nowait({"type": etype, "object": obj})
        self._watchers.append(((res.group, res.plural), ns, sel, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._watchers = [w for w in self._watchers if w[3] is not queue]

    # -- conveniences for tests --------------------------------------------------------
    def find(self, kind: str, ns: str | None = None, name: str | None = None) -> list[dict]:
        return [copy.deepcopy(o) for k, o in sorted(self.objects.items())
                if o.get("kind") == kind and (ns is None or k[2] == ns) and (name is None or k[3] == name)]

    def one(self, kind: str, ns: str, name: str) -> dict | None:
        found = self.find(kind, ns, name)
        return found[0] if found else None

    @contextlib.contextmanager
    def as_admin(self):
        """A cluster admin's requests: not recorded, not subject to ``rbac``."""
        rbac, n = self.rbac, len(self.requests)
        self.rbac = None
        try:
            yield
        finally:
            self.rbac = rbac
            del self.requests[n:]

    def put(self, obj: dict, *, manager: str = "kubectl") -> dict:
        """Create (or merge-patch when present) an object as a user would, unrecorded."""
        with self.as_admin():
            return copy.deepcopy(self._put(obj, manager))

    def _put(self, obj: dict, manager: str) -> dict:
        res = self.res_for(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        ns = meta.get("namespace") if res.namespaced else None
        if self._key(res, ns, meta["name"]) in self.objects:
            return self.merge_patch(res, ns, meta["name"], obj, manager=manager)
        return self.create(res, ns, obj, manager=manager, record=False)

    def remove(self, kind: str, ns: str | None, name: str, api_version: str | None = None) -> dict:
        """Delete as a user would (finalizers honoured), unrecorded."""
        res = self.res_for(api_version, kind) if api_version else next(
            r for r in self.resources.values() if r.kind == kind and (r.group != "events.k8s.io"))
        with self.as_admin():
            return copy.deepcopy(self.delete(res, ns, name, record=False))

    def edit(self, kind: str, ns: str, name: str, patch: dict, *, manager: str = "kubectl-edit",
             sub: str | None = None) -> dict:
        """A merge patch as a person would make it, unrecorded."""
        obj = self.one(kind, ns, name)
        assert obj is not None, f"{kind} {ns}/{name} does not exist"
        res = self.res_for(obj["apiVersion"], kind)
        with self.as_admin():
            return copy.deepcopy(self.merge_patch(res, ns, name, patch, manager=manager, sub=sub))


# ---------------------------------------------------------------------------
# In-process client (implements correo_operator.kube.Kube)
# ---------------------------------------------------------------------------

def _as_kube_error(exc: ApiError):
    from correo_operator.kube import ApiError as KubeApiError
    return KubeApiError(exc.code, exc.reason, exc.message)


class DoubleKube:
    """``correo_operator.kube.Kube`` in memory, over a :class:`Store`; results are
    copies (as if they had crossed the wire)."""

    def __init__(self, store: Store, *, manager: str = "correo", latency: float = 0.0) -> None:
        self.store = store
        self.manager = manager
        self.latency = latency

    async def _tick(self) -> None:
        await asyncio.sleep(self.latency)

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        await self._tick()
        try:
            return copy.deepcopy(self.store.get(self.store.res_for(api_version, kind), namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise _as_kube_error(exc) from None

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict]:
        await self._tick()
        selector = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or None
        try:
            return copy.deepcopy(self.store.list(self.store.res_for(api_version, kind), namespace, selector)["items"])
        except ApiError as exc:
            raise _as_kube_error(exc) from None

    async def apply(self, obj: dict) -> dict:
        await self._tick()
        res = self.store.res_for(obj["apiVersion"], obj["kind"])
        try:
            return copy.deepcopy(self.store.apply(res, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                                                  obj, manager=self.manager, force=True))
        except ApiError as exc:
            raise _as_kube_error(exc) from None

    async def create(self, obj: dict) -> dict | None:
        await self._tick()
        res = self.store.res_for(obj["apiVersion"], obj["kind"])
        try:
            return copy.deepcopy(self.store.create(res, obj["metadata"].get("namespace"), obj, manager=self.manager))
        except ApiError as exc:
            if exc.code == 409:
                return None
            raise _as_kube_error(exc) from None

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str, patch: dict) -> dict | None:
        await self._tick()
        try:
            return copy.deepcopy(self.store.merge_patch(self.store.res_for(api_version, kind), namespace, name,
                                                        {"status": patch}, manager=self.manager, sub="status"))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise _as_kube_error(exc) from None

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     propagation: str = "Background") -> bool:
        await self._tick()
        try:
            self.store.delete(self.store.res_for(api_version, kind), namespace, name, propagation=propagation,
                              manager=self.manager)
            return True
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise _as_kube_error(exc) from None

    async def post_event(self, involved: dict, *, type: str, reason: str, message: str) -> None:
        from correo_operator.kube import event_body
        await self._tick()
        body = event_body(involved, type=type, reason=reason, message=message)
        res = self.store.res("", "events")
        self.store.create(res, body["metadata"]["namespace"], body, manager=self.manager)


# ---------------------------------------------------------------------------
# HTTP front (what HttpKube and kopf talk to)
# ---------------------------------------------------------------------------

def _discovery_resources(store: Store, group: str, version: str) -> list[dict]:
    out = []
    for res in store.resources.values():
        if res.group != group or res.version != version:
            continue
        out.append({"name": res.plural, "singularName": res.singular or res.kind.lower(),
                    "namespaced": res.namespaced, "kind": res.kind,
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    "shortNames": list(res.short), "categories": list(res.categories)})
        if res.status_sub:
            out.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                        "kind": res.kind, "verbs": ["get", "patch", "update"]})
    return out


def app(store: Store) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await _route(store, request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


async def _route(store: Store, request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.path.split("/") if p]
    q = request.query
    if parts == ["version"]:
        return web.json_response({"major": "1", "minor": "36", "gitVersion": "v1.36.0", "platform": "linux/amd64"})
    if parts == ["api"]:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
    if parts == ["apis"]:
        groups: dict[str, list[str]] = {}
        for res in store.resources.values():
            if res.group and res.version not in groups.setdefault(res.group, []):
                groups[res.group].append(res.version)
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in sorted(groups.items())]})
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"no route for {request.path}")
    if not rest:
        resources = _discovery_resources(store, group, version)
        if not resources:
            raise ApiError(404, "NotFound", f"no group version {group}/{version}")
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": f"{group}/{version}" if group else version, "resources": resources})
    ns: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    res = store.res(group, rest[0])
    if res.version != version:
        raise ApiError(404, "NotFound", f"{rest[0]} is not served in {group}/{version}")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
    method = request.method

    if method == "GET" and name is None:
        if q.get("watch") in ("true", "1"):
            return await _watch(store, request, res, ns)
        limit = int(q["limit"]) if q.get("limit") else None
        return web.json_response(store.list(res, ns, q.get("labelSelector"), limit=limit, cont=q.get("continue")))
    if method == "GET":
        obj = store.get(res, ns, name)
        if sub:
            store.requests[-1].resource += f"/{sub}"
        return web.json_response(obj)
    body = await request.json() if request.can_read_body else None
    if method == "POST" and name is None:
        return web.json_response(store.create(res, ns, body, manager=manager), status=201)
    if method == "PATCH" and name:
        ctype = request.content_type
        if ctype == "application/apply-patch+yaml":
            return web.json_response(store.apply(res, ns, name, body, manager=manager,
                                                 force=q.get("force") == "true", sub=sub))
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return web.json_response(store.merge_patch(res, ns, name, body, manager=manager, sub=sub))
        if ctype == "application/json-patch+json":
            return web.json_response(store.json_patch(res, ns, name, body, manager=manager, sub=sub))
        raise ApiError(415, "UnsupportedMediaType", f"the double does not support {ctype}")
    if method == "DELETE" and name:
        propagation = (body or {}).get("propagationPolicy") or q.get("propagationPolicy") or "Background"
        return web.json_response(store.delete(res, ns, name, propagation=propagation, manager=manager))
    raise ApiError(405, "MethodNotAllowed", f"{method} {request.path}")


async def _watch(store: Store, request: web.Request, res: Res, ns: str | None) -> web.StreamResponse:
    store.record("watch", res, None, ns, None)
    since = request.query.get("resourceVersion")
    queue = store.subscribe(res, ns, request.query.get("labelSelector"),
                            int(since) if since not in (None, "", "0") else None)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    timeout = float(request.query.get("timeoutSeconds") or 0) or None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break  # the client went away
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
                if event["type"] == "ERROR":
                    break
    except (TimeoutError, ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.unsubscribe(queue)
    return response


class Server:
    """The store behind HTTP on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> "Server":
        self.runner = web.AppRunner(app(self.store), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        if self.runner:
            await self.runner.cleanup()
