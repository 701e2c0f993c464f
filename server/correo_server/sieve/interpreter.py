"""Running a compiled :class:`~.compiler.Script` on one message: a pure function.

``run(script, message, envelope, context) -> Result``.  It reads the message
(:mod:`.message`), the envelope, the clock value and the tracking state of
the context, and returns the actions (:mod:`.actions`) with the state
updates to record; it writes nothing and sends nothing.

Semantics follow RFC 5228 2.10: actions are collected in order, a message is
stored at most once per folder (the last flags win, RFC 5232 3), a redirect
is sent at most once per address, the implicit keep is taken unless an
action cancelled it.  Conflicts and limits are run-time errors: two
``vacation`` actions, ``reject`` with a delivering action or with
``vacation`` (RFC 5429 2.4), more actions or redirects than
:class:`~.context.Limits` allows, too much CPU, an include loop or a missing
include.  A run-time error ends the run with only the implicit keep, and the
error in ``Result.error``: mail is never lost to a broken script.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time

from .actions import (Action, Discard, FileInto, Keep, OutgoingMessage, Redirect, Reject, Result,
                      StateUpdate, Vacation)
from .addresses import address_part, parse_address_list, parse_path
from .comparators import contains, glob, relation_holds
from .compiler import Call, If, Script, valid_address, valid_folder_name
from .context import Context, Envelope, Limits
from .dates import DATE_PARTS, date_part, header_datetime, parse_zone
from .errors import Diagnostic, SieveError, SieveRuntimeError
from .message import MessageView, decode_header_value, html_to_text, raw_text, unfold
from .strings import MatchVar, Template, Value, Var, quote_wildcards, source
from . import vacation as vacationmod

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
_ATOM_SPECIALS = set('(){ %*"\\]')


def normalize_flags(values: list[str]) -> list[str]:
    """IMAP flags from flag strings (RFC 5232 2): split on spaces, invalid
    ones dropped, duplicates (case-insensitive) removed, order kept."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            low = flag.lower()
            if flag.startswith("\\"):
                flag = SYSTEM_FLAGS.get(low, "")
            elif not flag.isascii() or any(c in _ATOM_SPECIALS or ord(c) < 33 or ord(c) == 127 for c in flag):
                flag = ""
            if flag and low not in seen:
                seen.add(low)
                out.append(flag)
    return out


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Frame:
    """One script's execution: its local variables and match variables."""

    def __init__(self, script: Script, depth: int) -> None:
        self.script = script
        self.depth = depth
        self.variables: dict[str, str] = {}
        self.globals_declared: set[str] = set()
        self.match: list[str] = []
        self.variables_enabled = script.requires("variables")


class _Results:
    """Collects actions with RFC 5228's merging rules."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.stores: dict[str, int] = {}  # folder key → index in actions
        self.redirects: set[str] = set()
        self.delivering: tuple[str, int] | None = None  # (action, line) of the first delivering action
        self.reject: tuple[str, int] | None = None
        self.vacation_line: int | None = None
        self.discarded = False

    def _count(self, call: Call, rt: "_Runtime") -> None:
        if len(self.actions) >= self.limits.max_actions:
            raise rt.error(call, f"too many actions: more than {self.limits.max_actions}", "limit")

    def _delivers(self, name: str, call: Call, rt: "_Runtime") -> None:
        if self.reject is not None:
            raise rt.error(call, f"'{name}' cannot follow '{self.reject[0]}' (line {self.reject[1]}): a message "
                           "is either delivered or refused (RFC 5429 2.4)", "conflict")
        if self.delivering is None:
            self.delivering = (name, call.line)

    def store(self, call: Call, rt: "_Runtime", folder: str | None, flags, *, create=False, copy=False) -> None:
        self._delivers("keep" if folder is None else "fileinto", call, rt)
        key = "inbox" if folder is None or folder.upper() == "INBOX" else folder
        if not copy:
            self.implicit_keep = False
        if key in self.stores:
            i = self.stores[key]
            old = self.actions[i]
            if isinstance(old, Keep):
                self.actions[i] = Keep(flags=flags)
            else:
                assert isinstance(old, FileInto)
                self.actions[i] = FileInto(old.folder, flags, create=old.create or create, copy=old.copy and copy)
            return
        self._count(call, rt)
        self.stores[key] = len(self.actions)
        self.actions.append(Keep(flags=flags) if folder is None else FileInto(folder, flags, create=create, copy=copy))

    def redirect(self, call: Call, rt: "_Runtime", address: str, copy: bool) -> None:
        self._delivers("redirect", call, rt)
        if not copy:
            self.implicit_keep = False
        addr = parse_path(address)
        key = f"{addr.local}@{addr.domain.lower()}" if addr else address
        if key in self.redirects:
            return
        if len(self.redirects) >= self.limits.max_redirects:
            raise rt.error(call, f"too many redirects: more than {self.limits.max_redirects}", "limit")
        self._count(call, rt)
        self.redirects.add(key)
        self.actions.append(Redirect(address, copy))

    def reject_(self, call: Call, rt: "_Runtime", reason: str, extended: bool) -> None:
        name = "ereject" if extended else "reject"
        if self.reject is not None:
            raise rt.error(call, f"only one reject per script; '{self.reject[0]}' ran at line {self.reject[1]}",
                           "conflict")
        if self.delivering is not None:
            raise rt.error(call, f"'{name}' cannot follow '{self.delivering[0]}' (line {self.delivering[1]}): a "
                           "message is either delivered or refused (RFC 5429 2.4)", "conflict")
        if self.vacation_line is not None:
            raise rt.error(call, f"'{name}' cannot be used with 'vacation' (line {self.vacation_line}), "
                           "RFC 5429 2.4", "conflict")
        self._count(call, rt)
        self.reject = (name, call.line)
        self.implicit_keep = False
        self.actions.append(Reject(reason, extended))

    def vacation(self, call: Call, rt: "_Runtime", action: Vacation) -> None:
        if self.vacation_line is not None:
            raise rt.error(call, f"only one vacation per script; one ran at line {self.vacation_line} "
                           "(RFC 5230 4.7)", "conflict")
        if self.reject is not None:
            raise rt.error(call, f"'vacation' cannot be used with '{self.reject[0]}' (line {self.reject[1]}), "
                           "RFC 5429 2.4", "conflict")
        self._count(call, rt)
        self.vacation_line = call.line
        self.actions.append(action)

    def discard(self) -> None:
        self.implicit_keep = False
        if not self.discarded:
            self.discarded = True
            self.actions.append(Discard())


class _Runtime:
    def __init__(self, script: Script, message: MessageView, envelope: Envelope, context: Context) -> None:
        self.top = script
        self.message = message
        self.envelope = envelope
        self.ctx = context
        self.limits = context.limits
        self.now = context.now if context.now is not None else time.time()
        self.zone = context.zone or dt.datetime.now().astimezone().tzinfo or dt.timezone.utc
        self.results = _Results(self.limits)
        self.globals: dict[str, str] = {}
        self.flags: list[str] = []  # the internal variable of imap4flags
        self.uses_flags = script.requires("imap4flags")
        self.included: set[tuple[str, str]] = set()
        self.include_stack: list[tuple[str, str]] = [("personal", script.name)]
        self.include_count = 0
        self.state_updates: dict[str, StateUpdate] = {}
        self.cpu_start = context.cpu_clock()
        self.frame: _Frame | None = None

    # -- errors and limits ----------------------------------------------------------------
    def error(self, call: Call | If, message: str, kind: str = "error") -> SieveRuntimeError:
        name = self.frame.script.name if self.frame else self.top.name
        return SieveRuntimeError(Diagnostic(message, call.line, call.column, name), kind=kind)

    def tick(self) -> None:
        if self.ctx.cpu_clock() - self.cpu_start > self.limits.cpu_seconds:
            raise SieveRuntimeError(Diagnostic(f"the script used more than {self.limits.cpu_seconds:g} s of CPU",
                                               0, 0, self.frame.script.name if self.frame else self.top.name),
                                    kind="cpu")

    # -- strings --------------------------------------------------------------------------------
    def expand(self, value: Value) -> str:
        if not isinstance(value, Template):
            return value
        frame = self.frame
        assert frame is not None
        out: list[str] = []
        for part in value.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, MatchVar):
                out.append(frame.match[part.index] if part.index < len(frame.match) else "")
            else:
                out.append(self.get_var(part))
        return "".join(out)

    def expand_list(self, values) -> list[str]:
        return [self.expand(v) for v in values]

    def get_var(self, var: Var) -> str:
        frame = self.frame
        assert frame is not None
        if var.namespace == "global" or var.name in frame.globals_declared:
            return self.globals.get(var.name, "")
        return frame.variables.get(var.name, "")

    def set_var(self, call: Call, name: str, value: str) -> None:
        frame = self.frame
        assert frame is not None
        if len(value) > self.limits.max_variable_size:
            value = value[: self.limits.max_variable_size]  # RFC 5229 6: cut, not an error
        low = name.lower()
        if low.startswith("global."):
            scope, low = self.globals, low[7:]
        elif low in frame.globals_declared:
            scope = self.globals
        else:
            scope = frame.variables
        if low not in scope and len(scope) >= self.limits.max_variables:
            raise self.error(call, f"too many variables: more than {self.limits.max_variables}", "limit")
        scope[low] = value

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.frame = _Frame(self.top, 0)
        try:
            self.block(self.top.commands)
        except (_Stop, _Return):
            pass

    def block(self, nodes) -> None:
        for node in nodes:
            self.tick()
            if isinstance(node, If):
                for test, body in node.branches:
                    if self.test(test):
                        self.block(body)
                        break
                else:
                    if node.otherwise is not None:
                        self.block(node.otherwise)
            else:
                handler = getattr(self, f"cmd_{node.name}")
                handler(node)

    def test(self, call: Call) -> bool:
        self.tick()
        return getattr(self, f"test_{call.name}")(call)

    # -- matching --------------------------------------------------------------------------------
    def matches(self, call: Call, values: list[str], keys: list[str], *, count: int | None = None,
                capture: bool = True) -> bool:
        m = call.match
        assert m is not None
        comp = m.comparator
        if m.type == "count":
            n = str(len(values) if count is None else count)
            return any(relation_holds(m.relation or "eq", comp.order(n, k)) for k in keys)
        frame = self.frame
        for value in values:
            self.tick()
            for key in keys:
                if m.type == "is":
                    ok = comp.equal(value, key)
                elif m.type == "contains":
                    ok = contains(value, key, comp)
                elif m.type == "value":
                    ok = relation_holds(m.relation or "eq", comp.order(value, key))
                else:
                    found = glob(key, value, comp, self.tick)
                    if found is None:
                        continue
                    if capture and frame is not None and frame.variables_enabled:
                        frame.match = found
                    return True
                if ok:
                    return True
        return False

    def _fields(self, call: Call, names: list[str]) -> list[bytes]:
        """The raw fields named (in list order), narrowed by :index/:last (RFC 5260 6)."""
        fields: list[bytes] = []
        for name in names:
            fields.extend(self.message.raw_values(name))
        index = call.tags.get("index")
        if isinstance(index, int):
            if index > len(fields):
                return []
            fields = [fields[-index] if call.tags.get("last") else fields[index - 1]]
        return fields

    # -- tests ------------------------------------------------------------------------------------
    def test_true(self, call: Call) -> bool:
        return True

    def test_false(self, call: Call) -> bool:
        return False

    def test_not(self, call: Call) -> bool:
        return not self.test(call.tests[0])

    def test_allof(self, call: Call) -> bool:
        return all(self.test(t) for t in call.tests)

    def test_anyof(self, call: Call) -> bool:
        return any(self.test(t) for t in call.tests)

    def test_exists(self, call: Call) -> bool:
        return all(self.message.exists(n) for n in self.expand_list(call.args[0]))

    def test_size(self, call: Call) -> bool:
        limit = call.args[0]
        assert isinstance(limit, int)
        return self.message.size > limit if call.tags.get("over") else self.message.size < limit

    def test_header(self, call: Call) -> bool:
        names = self.expand_list(call.args[0])
        values = [decode_header_value(unfold(v)) for v in self._fields(call, names)]
        return self.matches(call, values, self.expand_list(call.args[1]))

    def test_address(self, call: Call) -> bool:
        names = self.expand_list(call.args[0])
        values: list[str] = []
        count = 0
        delimiter = self.ctx.recipient_delimiter
        for raw in self._fields(call, names):
            for addr in parse_address_list(raw_text(unfold(raw))):
                count += 1
                part = address_part(addr, call.address_part, delimiter)
                if part is not None:
                    values.append(part)
        return self.matches(call, values, self.expand_list(call.args[1]), count=count)

    def test_envelope(self, call: Call) -> bool:
        values: list[str] = []
        count = 0
        delimiter = self.ctx.recipient_delimiter
        for part in self.expand_list(call.args[0]):
            part = part.lower()
            if part == "from":
                if not self.envelope.sender:
                    values.append("")  # RFC 5228 5.4: <> is "" whatever the address part
                    continue
                text = self.envelope.sender
            elif part == "to":
                text = self.envelope.recipient
            else:
                raise self.error(call, f"unknown envelope part '{part}'")
            addr = parse_path(text)
            if addr is None:
                values.append("")
                continue
            count += 1
            value = address_part(addr, call.address_part, delimiter)
            if value is not None:
                values.append(value)
        return self.matches(call, values, self.expand_list(call.args[1]), count=count)

    def test_string(self, call: Call) -> bool:
        sources = self.expand_list(call.args[0])
        return self.matches(call, sources, self.expand_list(call.args[1]),
                            count=sum(1 for s in sources if s))

    def test_body(self, call: Call) -> bool:
        keys = self.expand_list(call.args[0])
        msg = self.message
        if not msg.has_body:
            return False
        if call.tags.get("raw"):
            raw = msg.raw_body or b""
            values = [raw.decode("utf-8", "replace")]
        elif "content" in call.tags:
            types = [t.strip().lower() for t in self.expand_list(call.tags["content"])]  # type: ignore[arg-type]
            values = self._body_content(types)
        else:
            values = self._body_text()
        return self.matches(call, values, keys, capture=False)

    def _type_matches(self, ctype: str, wanted: list[str]) -> bool:
        for want in wanted:
            if want == "":
                return True
            if want.startswith("/") or want.endswith("/") or want.count("/") > 1:
                continue
            if "/" in want:
                if ctype == want:
                    return True
            elif ctype.split("/", 1)[0] == want:
                return True
        return False

    def _body_content(self, types: list[str]) -> list[str]:
        values: list[str] = []
        for part in self.message.walk():
            self.tick()
            if part is self.message.root and not part.children and part.message is None:
                if self._type_matches(part.content_type, types):
                    values.append(part.text())
                continue
            if not self._type_matches(part.content_type, types):
                continue
            if part.main_type == "multipart":
                for piece in (part.preamble, part.epilogue):
                    if piece:
                        values.append(piece.decode("utf-8", "replace"))
            elif part.content_type == "message/rfc822":
                if part.message is not None:
                    values.append(part.message.header.decode("utf-8", "replace"))
            else:
                values.append(part.text())
        return values

    def _body_text(self) -> list[str]:
        values: list[str] = []
        for part in self.message.walk():
            self.tick()
            if part.children or part.message is not None or part.main_type != "text":
                continue
            disposition = (part.field("content-disposition") or "").lower()
            if disposition.startswith("attachment"):
                continue
            text = part.text()
            values.append(html_to_text(text) if part.content_type == "text/html" else text)
        return values

    def test_hasflag(self, call: Call) -> bool:
        if call.args[0] is None:
            flags = list(self.flags)
        else:
            flags = []
            for name in self.expand_list(call.args[0]):
                flags.extend(self._flag_var(name))
        keys = [k for key in self.expand_list(call.args[1]) for k in key.split()]
        return self.matches(call, flags, keys, count=len({f.lower() for f in flags}))

    def _zone_of(self, call: Call) -> dt.tzinfo | None:
        zone = call.tags.get("zone")
        if zone is None:
            return self.zone
        text = self.expand(zone)  # type: ignore[arg-type]
        tz = parse_zone(text)
        if tz is None:
            raise self.error(call, f"invalid time zone '{text}': expected +hhmm or -hhmm")
        return tz

    def _date_part(self, call: Call, value) -> str:
        part = self.expand(value).lower()
        if part not in DATE_PARTS:
            raise self.error(call, f"unknown date part '{part}'")
        return part

    def test_date(self, call: Call) -> bool:
        name = self.expand(call.args[0])  # type: ignore[arg-type]
        part = self._date_part(call, call.args[1])
        keys = self.expand_list(call.args[2])
        fields = self._fields(call, [name])
        when = header_datetime(decode_header_value(unfold(fields[0]))) if fields else None
        if when is None:
            return self.matches(call, [], keys, count=0)
        if not call.tags.get("originalzone"):
            when = when.astimezone(self._zone_of(call))
        return self.matches(call, [date_part(when, part)], keys, count=1)

    def test_currentdate(self, call: Call) -> bool:
        part = self._date_part(call, call.args[0])
        when = dt.datetime.fromtimestamp(self.now, self._zone_of(call))
        return self.matches(call, [date_part(when, part)], self.expand_list(call.args[1]), count=1)

    def test_mailboxexists(self, call: Call) -> bool:
        exists = self.ctx.folder_exists
        if exists is None:
            return False
        return all(exists(name) for name in self.expand_list(call.args[0]))

    def _verdict_value(self, kind: str, percent: bool = False) -> str:
        v = self.ctx.verdict
        if kind == "virus":
            if v is None or v.virus_level is None:
                return "0"
            level = max(1, min(5, int(v.virus_level)))
            return f"{level} {v.virus_text}".rstrip()
        if v is None or v.spam_score is None:
            return "0"
        ratio = 0.0 if v.spam_score < 0 or v.spam_max <= 0 else min(v.spam_score / v.spam_max, 1.0)
        value = int(ratio * 100 + 0.001) if percent else int(ratio * 9 + 1.001)
        return f"{value} {v.spam_text}".rstrip()

    def test_spamtest(self, call: Call) -> bool:
        value = self._verdict_value("spam", bool(call.tags.get("percent")))
        tested = self.ctx.verdict is not None and self.ctx.verdict.spam_score is not None
        return self.matches(call, [value], [self.expand(call.args[0])], count=1 if tested else 0)

    def test_virustest(self, call: Call) -> bool:
        value = self._verdict_value("virus")
        tested = self.ctx.verdict is not None and self.ctx.verdict.virus_level is not None
        return self.matches(call, [value], [self.expand(call.args[0])], count=1 if tested else 0)

    def test_duplicate(self, call: Call) -> bool:
        if "uniqueid" in call.tags:
            unique = self.expand(call.tags["uniqueid"])  # type: ignore[arg-type]
        else:
            header = self.expand(call.tags["header"]) if "header" in call.tags else "message-id"  # type: ignore
            unique = self.message.first(header)
            if unique is None:
                return False
            unique = unique.strip()
        seconds = call.tags.get("seconds")
        seconds = self.limits.duplicate_default_seconds if seconds is None else int(seconds)  # type: ignore
        seconds = min(seconds, self.limits.duplicate_max_seconds)
        if seconds <= 0:
            return False
        handle = self.expand(call.tags["handle"]) if "handle" in call.tags else ""  # type: ignore[arg-type]
        data = "\0".join(("duplicate", self.ctx.mailbox.lower(), handle, unique))
        key = "d:" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()
        seen = self.ctx.state.seen(key, self.now) if self.ctx.state is not None else False
        if not seen or call.tags.get("last"):
            self.state_updates[key] = StateUpdate(key, self.now + seconds)
        return seen

    # -- commands ---------------------------------------------------------------------------------
    def cmd_stop(self, call: Call) -> None:
        raise _Stop()

    def cmd_return(self, call: Call) -> None:
        raise _Return()

    def _flags_for(self, call: Call) -> tuple[str, ...] | None:
        if "flags" in call.tags:
            return tuple(normalize_flags(self.expand_list(call.tags["flags"])))  # type: ignore[arg-type]
        if self.uses_flags:
            return tuple(self.flags)
        return None

    def cmd_keep(self, call: Call) -> None:
        self.results.store(call, self, None, self._flags_for(call))

    def cmd_discard(self, call: Call) -> None:
        self.results.discard()

    def cmd_fileinto(self, call: Call) -> None:
        folder = self.expand(call.args[0])  # type: ignore[arg-type]
        why = valid_folder_name(folder)
        if why:
            raise self.error(call, f"invalid folder name '{folder}': {why}")
        self.results.store(call, self, folder, self._flags_for(call),
                           create=bool(call.tags.get("create")), copy=bool(call.tags.get("copy")))

    def cmd_redirect(self, call: Call) -> None:
        address = self.expand(call.args[0])  # type: ignore[arg-type]
        why = valid_address(address)
        if why:
            raise self.error(call, f"invalid redirect address '{address}': {why}")
        items = parse_address_list(address)
        bare = items[0].all
        if len(self.message.raw_values("received")) >= self.limits.max_received:
            raise self.error(call, f"mail loop: the message has {self.limits.max_received} or more Received "
                             "fields; not redirected", "loop")
        self.results.redirect(call, self, bare, bool(call.tags.get("copy")))

    def cmd_reject(self, call: Call) -> None:
        self.results.reject_(call, self, self.expand(call.args[0]), False)  # type: ignore[arg-type]

    def cmd_ereject(self, call: Call) -> None:
        self.results.reject_(call, self, self.expand(call.args[0]), True)  # type: ignore[arg-type]

    def cmd_set(self, call: Call) -> None:
        name = call.args[0]
        assert isinstance(name, str)
        value = self.expand(call.args[1])  # type: ignore[arg-type]
        tags = call.tags
        if tags.get("lower"):
            value = _ascii_lower(value)
        if tags.get("upper"):
            value = _ascii_upper(value)
        if tags.get("lowerfirst") and value:
            value = _ascii_lower(value[0]) + value[1:]
        if tags.get("upperfirst") and value:
            value = _ascii_upper(value[0]) + value[1:]
        if tags.get("quotewildcard"):
            value = quote_wildcards(value)
        if tags.get("length"):
            value = str(len(value))
        self.set_var(call, name, value)

    def cmd_global(self, call: Call) -> None:
        frame = self.frame
        assert frame is not None
        for name in call.args[0]:  # type: ignore[union-attr]
            low = str(name).lower()
            if low in frame.variables:
                raise self.error(call, f"'{name}' was set in this script before being declared global (RFC 6609 3.4.1)")
            frame.globals_declared.add(low)

    def _flag_var(self, name: str) -> list[str]:
        frame = self.frame
        assert frame is not None
        return self.get_var(Var(name.lower())).split()

    def _flag_command(self, call: Call, op: str) -> None:
        given = normalize_flags(self.expand_list(call.args[1]))  # type: ignore[arg-type]
        if call.args[0] is None:
            current = self.flags
        else:
            current = normalize_flags(self._flag_var(self.expand(call.args[0])))  # type: ignore[arg-type]
        if op == "set":
            new = given
        elif op == "add":
            new = normalize_flags([" ".join(current + given)])
        else:
            drop = {g.lower() for g in given}
            new = [f for f in current if f.lower() not in drop]
        if call.args[0] is None:
            self.flags = new
        else:
            self.set_var(call, self.expand(call.args[0]), " ".join(new))  # type: ignore[arg-type]

    def cmd_setflag(self, call: Call) -> None:
        self._flag_command(call, "set")

    def cmd_addflag(self, call: Call) -> None:
        self._flag_command(call, "add")

    def cmd_removeflag(self, call: Call) -> None:
        self._flag_command(call, "remove")

    def cmd_include(self, call: Call) -> None:
        name = call.args[0]
        assert isinstance(name, str)
        location = "global" if call.tags.get("global") else "personal"
        ident = (location, name)
        if call.tags.get("once") and (ident in self.included or ident in self.include_stack):
            return
        if ident in self.include_stack:
            raise self.error(call, f"include loop: '{name}' is already being run", "include")
        if len(self.include_stack) > self.limits.max_include_depth:
            raise self.error(call, f"includes nested too deeply (more than {self.limits.max_include_depth})",
                             "limit")
        if self.include_count >= self.limits.max_includes:
            raise self.error(call, f"too many includes (more than {self.limits.max_includes})", "limit")
        resolver = self.ctx.includes
        try:
            script = resolver.resolve(name, location) if resolver is not None else None
        except SieveError as exc:
            raise self.error(call, f"the {location} script '{name}' is invalid: {exc.human()}", "include") from None
        if script is None:
            if call.tags.get("optional"):
                return
            raise self.error(call, f"the {location} script '{name}' does not exist", "include")
        self.include_count += 1
        self.included.add(ident)
        self.include_stack.append(ident)
        caller, uses_flags = self.frame, self.uses_flags
        self.frame = _Frame(script, len(self.include_stack))
        self.uses_flags = uses_flags or script.requires("imap4flags")
        try:
            self.block(script.commands)
        except _Return:
            pass
        finally:
            self.frame = caller
            self.include_stack.pop()

    def cmd_vacation(self, call: Call) -> None:
        tags = call.tags
        reason_v = call.args[0]
        subject_v, from_v, handle_v = tags.get("subject"), tags.get("from"), tags.get("handle")
        mime = bool(tags.get("mime"))
        if handle_v is not None:
            handle = "h:" + self.expand(handle_v)  # type: ignore[arg-type]
        else:  # RFC 5230 4.2: the arguments before variable expansion
            handle = vacationmod.synthesized_handle(source(reason_v), None if subject_v is None else source(subject_v),
                                                    None if from_v is None else source(from_v), mime)
        limits = self.limits
        if "seconds" in tags:
            seconds = int(tags["seconds"])  # type: ignore[arg-type]
        elif "days" in tags:
            seconds = max(int(tags["days"]), 1) * 86400  # type: ignore[arg-type]
        else:
            seconds = limits.vacation_default_seconds
        seconds = min(max(seconds, limits.vacation_min_seconds), limits.vacation_max_seconds)
        from_ = self.expand(from_v) if from_v is not None else None  # type: ignore[arg-type]
        if from_ is not None and valid_address(from_):
            from_ = None  # RFC 5230 4.3: an invalid :from is ignored
        request = vacationmod.VacationRequest(
            reason=self.expand(reason_v),  # type: ignore[arg-type]
            handle=handle, seconds=seconds,
            subject=self.expand(subject_v) if subject_v is not None else None,  # type: ignore[arg-type]
            from_=from_,
            addresses=tuple(self.expand_list(tags.get("addresses") or [])),  # type: ignore[arg-type]
            mime=mime,
        )
        sender = vacationmod.recipient_of_reply(self.envelope)
        key = vacationmod.tracking_key(self.ctx.mailbox, handle, sender)
        seen = bool(sender) and seconds > 0 and self.ctx.state is not None and self.ctx.state.seen(key, self.now)
        decision = vacationmod.decide(self.message, self.envelope, request, mailbox=self.ctx.mailbox,
                                      aliases=self.ctx.addresses, already_replied=seen,
                                      delimiter=self.ctx.recipient_delimiter)
        about = dict(period=seconds, subject=request.subject, text=request.reason)
        if not decision.send:
            self.results.vacation(call, self, Vacation(sender, None, decision.reason, decision.message, **about))
            return
        data = vacationmod.build_reply(
            self.message, self.envelope, request, reply_from=decision.reply_from or self.ctx.mailbox,
            now=self.now, hostname=self.ctx.hostname,
            message_id=self.ctx.new_message_id() if self.ctx.new_message_id else None, zone=self.zone)
        track = StateUpdate(key, self.now + seconds) if seconds > 0 else None
        self.results.vacation(call, self, Vacation(sender, OutgoingMessage("", (sender,), data), decision.reason,
                                                   decision.message, track, **about))


def _ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _ascii_upper(s: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


def run(script: Script, message: bytes | MessageView, envelope: Envelope, context: Context) -> Result:
    """Run ``script`` on ``message`` for ``envelope``: the actions to carry out."""
    view = message if isinstance(message, MessageView) else MessageView(message)
    rt = _Runtime(script, view, envelope, context)
    try:
        rt.run()
    except SieveRuntimeError as exc:
        return Result((Keep(implicit=True),), error=exc, cpu_seconds=context.cpu_clock() - rt.cpu_start)
    except RecursionError:
        err = SieveRuntimeError(Diagnostic("the script nests too deeply to run", 0, 0, script.name), kind="limit")
        return Result((Keep(implicit=True),), error=err, cpu_seconds=context.cpu_clock() - rt.cpu_start)
    res = rt.results
    actions = list(res.actions)
    if res.implicit_keep:
        if "inbox" in res.stores:
            pass  # an explicit copy to INBOX already: the implicit keep is that copy (RFC 5228 2.10.3)
        else:
            actions.append(Keep(flags=tuple(rt.flags) if rt.uses_flags else None, implicit=True))
    return Result(tuple(actions), None, tuple(rt.state_updates.values()),
                  cpu_seconds=context.cpu_clock() - rt.cpu_start)
