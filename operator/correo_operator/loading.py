"""Loading MailDomain and Mailbox resources from YAML, and validating them the
way a Kubernetes API server would.

``load_paths(paths)`` reads files and folders (multi-document YAML, ``kind:
List``), keeps MailDomains, Mailboxes and Secrets, fills in the CRD schema
defaults, and checks every resource against the CRD's openAPIV3Schema
(jsonschema; unknown fields are errors, as with ``kubectl apply
--validate=strict``) and its CEL rules (``x-kubernetes-validations``, with
cel-python).  Then it checks what no schema can: every Mailbox belongs to a
MailDomain of its namespace, names and addresses are unique, referenced
Secrets exist.  Every problem is reported, each naming the file and the
field's line in it (``file:LINE``, as compilers do, from the YAML nodes the
objects were read from), the document, the object and the field path, in the
order of the files and lines; an unknown field says which known one was
probably meant (``adress`` → ``address``).

Each MailDomain and Mailbox document is then read into the typed model
(``model``: frozen objects with every default in place), which is what the
rest of correo uses (``Loaded.maildomains``, ``Loaded.mailboxes_of``); the
cross-checks read it too.  A document that does not fit the model (wrong
types) keeps its schema errors and is left out of the cross-checks.

The CRDs in ``crds/`` are the single source of truth for validation; this
module reads them.  Secret values are read by ``secretdata``.
"""
from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import celpy
import jsonschema
import yaml

from . import mailrules, model, secretdata
from .model import API_VERSION, DEFAULT_NAMESPACE, GROUP, VERSION, MailDomain, Mailbox

KINDS = {"MailDomain": "maildomains.yaml", "Mailbox": "mailboxes.yaml"}

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ---------------------------------------------------------------------------
# The CRDs
# ---------------------------------------------------------------------------

def crd_dir() -> Path:
    return Path(str(importlib.resources.files("correo_operator") / "crds"))


@functools.cache
def _crd(kind: str) -> dict:
    with open(crd_dir() / KINDS[kind], encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def crd(kind: str) -> dict:
    """The CustomResourceDefinition of ``kind`` (a fresh copy: callers may change it)."""
    return copy.deepcopy(_crd(kind))


def crds() -> list[dict]:
    return [crd(kind) for kind in KINDS]


def schema(kind: str) -> dict:
    """The openAPIV3Schema of ``kind``; shared, so read it, never change it."""
    (version,) = [v for v in _crd(kind)["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def _strict(node: dict, *, top: bool = True) -> dict:
    """The CRD schema as JSON Schema in which unknown fields are errors."""
    node = dict(node)
    if node.get("type") == "object" and "properties" in node:
        node["properties"] = {
            k: (v if (top and k == "metadata") else _strict(v, top=False)) for k, v in node["properties"].items()
        }
        node.setdefault("additionalProperties", False)
    if "items" in node:
        node["items"] = _strict(node["items"], top=False)
    return node


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    strict = _strict(schema(kind))
    cls = jsonschema.validators.validator_for(strict, default=jsonschema.Draft7Validator)
    return cls(strict, format_checker=cls.FORMAT_CHECKER)


# ---------------------------------------------------------------------------
# Defaults (structural-schema semantics: a default applies where the field is
# missing and its parent object exists; ``default: {}`` creates the parent).
# ---------------------------------------------------------------------------

def _defaults(node: dict, value: Any) -> Any:
    if isinstance(value, dict) and node.get("type") == "object":
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _defaults(sub, value[key])
    elif isinstance(value, list) and "items" in node:
        return [_defaults(node["items"], v) for v in value]
    return value


def apply_defaults(obj: dict) -> dict:
    """A copy of a MailDomain or Mailbox with every schema default filled in."""
    out = copy.deepcopy(obj)
    kind = out.get("kind")
    if kind in KINDS:
        top = schema(kind)
        spec_schema = top["properties"]["spec"]
        if isinstance(out.get("spec"), dict):
            out["spec"] = _defaults(spec_schema, out["spec"])
    return out


# ---------------------------------------------------------------------------
# Validation of one object
# ---------------------------------------------------------------------------

_DOMAIN_PATTERNS = {
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
}
_QUANTITY_HINT = "a quantity such as 512Mi or 2Gi"


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def did_you_mean(name: str, known: list[str]) -> str | None:
    """The known field a misspelt one most likely meant (``adress`` →
    ``address``, ``aliases`` → ``aliasDomains``), or None."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return lowered[close[0]]
    starts = [k for k in known if k.lower().startswith(name.lower().rstrip("s")) and len(name) >= 4]
    return starts[0] if len(starts) == 1 else None


def _unknown(name: str, known: list[str]) -> str:
    guess = did_you_mean(name, known)
    return f'"{name}"' + (f' (did you mean "{guess}"?)' if guess else "")


def _messages(err: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """(field path, human message) for a jsonschema error: one per unknown
    field (each has its own line), otherwise one."""
    return _message(err) if err.validator == "additionalProperties" else [_message(err)]


def _message(err: jsonschema.ValidationError):
    """(field path, human message) for a jsonschema error."""
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        known = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in known]  # in the order written
        return [(_path(path + [e]), f"unknown field {_unknown(e, known)}") for e in extra]
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return _path(path + [missing]), "required field is missing"
    if v == "type":
        expected = err.validator_value
        return _path(path), f"expected {expected}, got {type(err.instance).__name__} {err.instance!r}"
    if v == "pattern":
        if err.validator_value in _DOMAIN_PATTERNS:
            return _path(path), f"{err.instance!r} is not a valid domain name (lower case, e.g. example.com)"
        if "Ki|Mi|Gi" in err.validator_value:
            return _path(path), f"{err.instance!r} is not {_QUANTITY_HINT}"
        if "@" in err.validator_value:
            return _path(path), f"{err.instance!r} is not a valid mail address"
        return _path(path), f"{err.instance!r} does not match {err.validator_value}"
    if v == "enum":
        return _path(path), f"{err.instance!r} is not one of: {', '.join(map(str, err.validator_value))}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return _path(path), f"{err.instance!r} is {'below the minimum' if 'min' in v.lower() else 'above the maximum'} {err.validator_value}"
    if v in ("maxLength", "minLength", "maxItems", "minItems"):
        return _path(path), err.message
    if v == "uniqueItems":
        return _path(path), "items must be unique"
    return _path(path), err.message


@functools.cache
def _cel_program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_errors(node: dict, value: Any, path: list) -> Iterator[tuple[str, str]]:
    for rule in node.get("x-kubernetes-validations", []):
        try:
            ok = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except Exception as exc:  # a rule that cannot evaluate is a failed rule
            ok = False
            detail = f" ({exc})"
        else:
            detail = ""
        if not bool(ok):
            where = path + [p for p in rule.get("fieldPath", "").lstrip(".").split(".") if p]
            yield _path(where), rule.get("message", f"failed rule: {rule['rule']}") + detail
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                yield from _cel_errors(sub, value[key], path + [key])
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            yield from _cel_errors(node["items"], item, path + [i])


def validate_object(obj: dict) -> list[tuple[str, str]]:
    """(field path, message) for every problem of a MailDomain or Mailbox whose
    defaults are already applied; empty when it is valid."""
    kind = obj.get("kind")
    problems: list[tuple[str, str]] = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(("apiVersion", f"expected {API_VERSION}, got {obj.get('apiVersion')!r}"))
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        problems.append(("metadata.name", "required field is missing"))
    else:
        name = str(meta["name"])
        if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            problems.append(("metadata.name", f"{name!r} is not a valid name (lower case letters, digits, '-' and '.')"))
        # Child objects are named <name>-mailstore-internal etc.: keep room for it.
        if kind == "MailDomain" and (len(name) > 40 or not _DNS1123_LABEL.match(name)):
            problems.append(("metadata.name", f"{name!r}: a MailDomain name must be a DNS label of at most 40 characters"))
        ns = meta.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(ns, str) or not _DNS1123_LABEL.match(ns):
            problems.append(("metadata.namespace", f"{ns!r} is not a valid namespace"))
    errors = sorted(_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        if err.absolute_path and err.absolute_path[0] == "status":
            continue  # status is the operator's, not the author's
        problems.extend(_messages(err))
    if not any(p.startswith("spec") for p, _ in problems) and isinstance(obj.get("spec"), dict):
        problems.extend(_cel_errors(schema(kind)["properties"]["spec"], obj["spec"], ["spec"]))
    return problems


# ---------------------------------------------------------------------------
# Loading from files
# ---------------------------------------------------------------------------

@dataclass
class Document:
    """One resource read from a file."""

    obj: dict
    source: str
    index: int  # 1-based position in its file
    resource: MailDomain | Mailbox | None = None  # the typed object; None when it does not fit the model
    node: yaml.Node | None = None  # where it was read from: the line of each field

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "")

    @property
    def _metadata(self) -> dict:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, dict) else {}  # not a mapping: the schema says so, naming it needs none

    @property
    def name(self) -> str:
        return str(self._metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self._metadata.get("namespace") or DEFAULT_NAMESPACE)

    def where(self) -> str:
        label = f"{self.kind} {self.namespace}/{self.name}" if self.name else (self.kind or "resource")
        return f"{self.source} (document {self.index}, {label})"

    def line_of(self, path: str) -> int | None:
        """The file line (1-based) of a field path such as
        ``spec.aliases[1]``: the field's own line, or for a field that is
        not there, the line of the deepest part that is (``spec:`` for a
        missing ``spec.address``).  None when the file was not read here."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in _PATH_PART.findall(path):
            if isinstance(node, yaml.MappingNode) and not part.startswith("["):
                found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
                if found is None:
                    break
                line, node = found[0].start_mark.line + 1, found[1]
            elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
                i = int(part[1:-1])
                if i >= len(node.value):
                    break
                node = node.value[i]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def problem(self, fld: str, message: str, severity: str = "error") -> "Problem":
        """A problem of this document's field ``fld``, with the field's line."""
        return Problem(self.where(), fld, message, severity, line=self.line_of(fld), source=self.source,
                       index=self.index)


_PATH_PART = re.compile(r"\[[0-9]+\]|[^.\[\]]+")


@dataclass
class Problem:
    where: str
    field: str
    message: str
    severity: str = "error"  # or "warning"
    line: int | None = None  # the field's line in ``source`` (shown as file:line, as compilers do)
    source: str = ""  # the file, when the problem is in one
    index: int = 0  # the document's position in it

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        where = self.where
        if self.line and self.source and where.startswith(self.source):
            where = f"{self.source}:{self.line}{where[len(self.source):]}"
        return f"{prefix}{where}: {self.field}: {self.message}"


@dataclass
class Loaded:
    domains: list[Document] = field(default_factory=list)
    mailboxes: list[Document] = field(default_factory=list)
    secrets: dict[tuple[str, str], Document] = field(default_factory=dict)
    other: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def files_with_errors(self) -> list[str]:
        """The files (or missing paths) that have errors, in reading order."""
        return list(dict.fromkeys(p.source or p.where for p in self.errors))

    def secrets_in(self, namespace: str) -> dict[str, dict]:
        return {name: doc.obj for (ns, name), doc in self.secrets.items() if ns == namespace}

    def maildomains(self) -> list[MailDomain]:
        """The MailDomains, typed, by namespace and name."""
        return sorted((d.resource for d in self.domains if d.resource is not None),
                      key=lambda d: (d.namespace, d.name))

    def mailboxes_of(self, domain: MailDomain) -> list[Mailbox]:
        """The Mailboxes that belong to ``domain``, typed, in the order of the files."""
        return [m.resource for m in self.mailboxes if m.resource is not None and model.belongs(m.resource, domain)]


def error_summary(loaded: Loaded) -> str:
    """``3 errors in 1 of 3 files`` (files read; a missing path counts as one)."""
    n, bad = len(loaded.errors), len(loaded.files_with_errors())
    read = max(len(loaded.files), bad)
    return (f"{n} error{'s' if n != 1 else ''} in {bad} of {read} file{'s' if read != 1 else ''}" if read != bad
            else f"{n} error{'s' if n != 1 else ''} in {bad} file{'s' if bad != 1 else ''}")


def document(obj: dict, source: str, index: int, node: yaml.Node | None = None) -> Document:
    """A Document of a MailDomain or Mailbox whose defaults are applied, with its typed resource."""
    return Document(obj, source, index, _resource(obj), node)


def _resource(obj: dict) -> MailDomain | Mailbox | None:
    """The typed object of a document.  A field of the wrong type (a schema
    error already) is left out, so that its default stands in and the
    cross-checks still see the object: one bad field must not make every
    Mailbox of a MailDomain look homeless.  None when a required field is unusable."""
    attempt = obj
    for _ in range(20):
        try:
            return model.from_object(attempt)
        except model.ModelError as exc:
            if attempt is obj:
                attempt = copy.deepcopy(obj)
            *parents, last = re.sub(r"\[[0-9]+\]", "", exc.path).split(".")
            node = attempt
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict) or last not in node:
                return None  # a required field is missing: nothing to stand in for it
            del node[last]
    return None


def _files(paths: list[str]) -> tuple[list[Path], list[Problem]]:
    out, problems = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            out.append(p)
        else:
            problems.append(Problem(str(p), "(file)", "no such file or folder"))
    return out, problems


class _KubeLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: an unquoted ``2025-07-01T00:00:00Z`` is a
    string (what a ``format: date-time`` field holds), not a datetime."""


_KubeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _documents(path: Path) -> tuple[list[Document], list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(str(path), "(file)", f"cannot be read: {exc}")]
    docs, problems = [], []
    try:
        raw = _nodes_and_objects(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        return [], [Problem(where, "(yaml)", f"not valid YAML: {getattr(exc, 'problem', exc)}", source=str(path))]
    for i, (node, obj) in enumerate(raw, start=1):
        if obj is None:
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(f"{path} (document {i})", "(top)", "expected a Kubernetes object (a mapping)",
                                    line=node.start_mark.line + 1, source=str(path), index=i))
            continue
        if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            items = next((v for k, v in node.value if getattr(k, "value", None) == "items"), None)
            item_nodes = items.value if isinstance(items, yaml.SequenceNode) else []
            docs.extend(Document(item, str(path), i, node=item_nodes[n] if n < len(item_nodes) else None)
                        for n, item in enumerate(obj["items"]) if isinstance(item, dict))
        else:
            docs.append(Document(obj, str(path), i, node=node))
    return docs, problems


def _nodes_and_objects(text: str) -> list[tuple[yaml.Node, Any]]:
    """Every document of a YAML stream: its node (which knows the lines) and
    the object read from it, as ``yaml.load_all`` would read it."""
    loader = _KubeLoader(text)
    out = []
    try:
        while loader.check_node():
            node = loader.get_node()
            out.append((node, loader.construct_document(node)))
    finally:
        loader.dispose()
    return out


def load_paths(paths: list[str]) -> Loaded:
    """Read, default and validate everything under ``paths``."""
    loaded = Loaded()
    files, loaded.problems = _files(paths)
    loaded.files = [str(f) for f in files]
    for path in files:
        docs, problems = _documents(path)
        loaded.problems.extend(problems)
        for doc in docs:
            _take(loaded, doc)
    _cross_check(loaded)
    # In the order of the files, their documents and lines (as an editor
    # shows them); problems that are no file's (a missing path) first.
    rank = {f: n for n, f in enumerate(loaded.files)}
    loaded.problems.sort(key=lambda p: (rank.get(p.source, -1), p.index, p.line or 0))
    return loaded


def _take(loaded: Loaded, doc: Document) -> None:
    kind, api = doc.kind, doc.obj.get("apiVersion")
    if not kind:
        loaded.problems.append(doc.problem("kind", "required field is missing"))
        return
    if not api:
        loaded.problems.append(doc.problem("apiVersion", "required field is missing"))
        return
    for fld, value in (("kind", kind), ("apiVersion", api)):
        if not isinstance(value, str):
            loaded.problems.append(doc.problem(fld, f"must be a string, not {type(value).__name__}"))
            return
    if str(api).split("/")[0] == GROUP:
        if kind not in KINDS:
            loaded.problems.append(doc.problem("kind", (
                f"no kind {kind!r} in {GROUP}: expected one of {', '.join(KINDS)}")))
            return
        doc.obj = apply_defaults(doc.obj)
        doc.obj.setdefault("metadata", {})
        if isinstance(doc.obj["metadata"], dict):
            doc.obj["metadata"].setdefault("namespace", DEFAULT_NAMESPACE)
        for fld, msg in validate_object(doc.obj):
            loaded.problems.append(doc.problem(fld, msg))
        doc = document(doc.obj, doc.source, doc.index, doc.node)
        (loaded.domains if kind == "MailDomain" else loaded.mailboxes).append(doc)
    elif kind in KINDS:
        loaded.problems.append(doc.problem("apiVersion", f"expected {API_VERSION}, got {api!r}"))
    elif kind == "Secret" and api == "v1":
        if not doc.name:
            loaded.problems.append(doc.problem("metadata.name", "required field is missing"))
            return
        for key, raw in sorted((doc.obj.get("data") or {}).items()):
            if secretdata.decode(raw) is None:
                loaded.problems.append(doc.problem(f"data.{key}", "not valid base64 of UTF-8 text"))
        loaded.secrets[(doc.namespace, doc.name)] = doc
    else:
        loaded.other.append(doc)  # e.g. a cert-manager Certificate: for kubectl, not for correo


def _cross_check(loaded: Loaded) -> None:
    seen: dict[tuple[str, str, str], Document] = {}
    for doc in loaded.domains + loaded.mailboxes:
        key = (doc.kind, doc.namespace, doc.name)
        if key in seen and doc.name:
            loaded.problems.append(doc.problem("metadata.name",
                                           f"{doc.kind} {doc.name} is also defined in {seen[key].where()}"))
        seen[key] = doc
    # Which MailDomain serves which domain name: the keys model.belongs compares.
    owner_of: dict[tuple[str, str], Document] = {}
    for doc in loaded.domains:
        domain = doc.resource
        if not isinstance(domain, MailDomain):
            continue
        fields = ["spec.domain"] + [f"spec.aliasDomains[{i}]" for i in range(len(domain.spec.alias_domains))]
        for fld, name in zip(fields, domain.domain_names):
            if not name:
                continue
            first = owner_of.setdefault((domain.namespace, name), doc)
            if first is not doc:
                loaded.problems.append(doc.problem(fld, f"{name} is also served by {first.where()}"))
        _check_domain_secrets(loaded, doc, domain)
    addresses: dict[tuple[str, str], Document] = {}
    for doc in loaded.mailboxes:
        mailbox = doc.resource
        if not isinstance(mailbox, Mailbox):
            continue
        spec = mailbox.spec
        address = spec.address.lower()
        if not address:
            continue
        owner = owner_of.get(mailbox.domain_key)
        if any(p.where == doc.where() and p.field == "spec.address" for p in loaded.problems):
            pass  # not an address at all: that error says enough
        elif owner is None:
            loaded.problems.append(doc.problem("spec.address", (
                f"{mailbox.address_domain} is not the domain or an alias domain of any MailDomain in "
                f"namespace {mailbox.namespace}")))
        else:
            for i, alias in enumerate(spec.aliases):
                if model.domain_part(alias) not in owner.resource.domain_names:
                    loaded.problems.append(doc.problem(f"spec.aliases[{i}]", (
                        f"{alias} is not in {owner.resource.spec.domain} or its alias domains")))
        for i, addr in enumerate([address, *(a.lower() for a in spec.aliases)]):
            other = addresses.get((mailbox.namespace, addr))
            if other is not None and other is not doc:
                fld = "spec.address" if i == 0 else f"spec.aliases[{i - 1}]"
                loaded.problems.append(doc.problem(fld, f"{addr} is also claimed by {other.where()}"))
            addresses[(mailbox.namespace, addr)] = doc
        _check_password_secret(loaded, doc, mailbox)
        _check_rules(loaded, doc, mailbox)
    for doc in loaded.domains:
        domain = doc.resource
        if isinstance(domain, MailDomain) and domain.spec.catch_all:
            local, _, name = domain.spec.catch_all.rpartition("@")
            if name in domain.domain_names and (domain.namespace, f"{local}@{domain.domain}".lower()) not in addresses:
                loaded.problems.append(doc.problem("spec.catchAll", (
                    f"no Mailbox in namespace {domain.namespace} has the address {domain.spec.catch_all} "
                    "(or an alias of it); mail to unknown addresses would still be refused")))


def _check_rules(loaded: Loaded, doc: Document, mailbox: Mailbox) -> None:
    """The admin Sieve script compiles (each problem with the script's line
    and column) and the auto-reply can run."""
    problem = mailrules.sieve_problem(mailbox)
    if problem is not None:
        origin = _block_scalar_origin(doc.source, doc.index, ("spec", "sieve"))
        for diag in problem.diagnostics:
            where = ""
            problem = doc.problem("spec.sieve", "")
            if origin is not None and diag.line > 0:
                where = f" ({Path(doc.source).name} line {origin[0] + diag.line}, column {origin[1] + diag.column})"
                problem.line = origin[0] + diag.line  # the script's line in the file
            problem.message = diag.human().replace(":", where + ":", 1)
            loaded.problems.append(problem)
    auto = mailrules.auto_reply_problem(mailbox)
    if auto is not None:
        loaded.problems.append(doc.problem("spec.autoReply", auto))


def _block_scalar_origin(source: str, index: int, keys: tuple[str, ...]) -> tuple[int, int] | None:
    """Where a literal block scalar (``sieve: |``) starts in its file: (the
    file line before its first line, the column before its text), 1-based, so
    that a script's line and column can be shown as the file's too.  None
    for other scalar styles or when the file cannot be read again."""
    try:
        nodes = list(yaml.compose_all(Path(source).read_text(encoding="utf-8")))
        node = [n for n in nodes if n is not None][index - 1]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, IndexError):
        return None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    if not isinstance(node, yaml.ScalarNode) or node.style != "|":
        return None
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    first = node.start_mark.line + 1  # 0-based index of the scalar's first text line
    text = next((ln for ln in lines[first:node.end_mark.line + 1] if ln.strip()), "")
    return first, len(text) - len(text.lstrip(" "))


def _check_domain_secrets(loaded: Loaded, doc: Document, domain: MailDomain) -> None:
    tls = domain.tls_secret
    if tls and (domain.namespace, tls) not in loaded.secrets:
        loaded.problems.append(doc.problem("spec.tls.secretName", (
            f"Secret {tls} is not in the files given (fine when cert-manager creates it in the "
            "cluster; `correo up` uses a self-signed certificate instead)"), "warning"))
    cred = domain.smarthost_credentials
    if cred and (domain.namespace, cred.name) not in loaded.secrets:
        loaded.problems.append(doc.problem("spec.relay.smarthost.credentialsSecretRef.name",
                                       f"Secret {cred.name} is not in the files given", "warning"))
    ref = domain.rspamd_password
    if ref and (domain.namespace, ref.name) not in loaded.secrets:
        loaded.problems.append(Problem(doc.where(), "spec.filter.rspamd.passwordSecretRef.name",
                                       f"Secret {ref.name} is not in the files given", "warning"))


def _check_password_secret(loaded: Loaded, doc: Document, mailbox: Mailbox) -> None:
    ref = mailbox.spec.password_secret_ref
    secret = loaded.secrets.get((mailbox.namespace, ref.name))
    if secret is None:
        loaded.problems.append(doc.problem("spec.passwordSecretRef.name", (
            f"Secret {ref.name} is not in the files given; the mailbox cannot log in until it exists"),
            "warning"))
    elif not secretdata.has_key(secret.obj, ref.key):
        loaded.problems.append(doc.problem("spec.passwordSecretRef.key",
                                       f"Secret {ref.name} has no key {ref.key!r}"))
    else:
        problem = secretdata.password_problem(secretdata.secret_value(secret.obj, ref.key))
        if problem:
            loaded.problems.append(doc.problem("spec.passwordSecretRef",
                                           f"Secret {ref.name} key {ref.key!r} {problem}"))
