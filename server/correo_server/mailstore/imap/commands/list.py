"""LIST and LSUB (RFC 3501 6.3.8-9), with LIST-EXTENDED (RFC 5258: several
patterns, selection options SUBSCRIBED, REMOTE and RECURSIVEMATCH, return
options SUBSCRIBED and CHILDREN) and CHILDREN (RFC 3348: \\HasChildren /
\\HasNoChildren on every entry).  Other modules add options through the
registry (LIST-STATUS's ``RETURN (STATUS (...))``, SPECIAL-USE's selection).

RECURSIVEMATCH: a folder that matches a pattern but is not itself
subscribed is listed, with ``CHILDINFO ("SUBSCRIBED")``, when a subscribed
descendant of it is *not* listed by the patterns (RFC 5258 3.5); a
descendant that the patterns list speaks for itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import responses as R
from ..reader import Reader
from .base import LOGGED_IN, Command, ListOption, Parse, Registry, Reply, ok

if TYPE_CHECKING:
    from ..session import Session

DELIMITER = "/"


def pattern(reference: str, pat: str) -> re.Pattern:
    """The folder names a reference and a pattern match (``*`` anything,
    ``%`` anything but the delimiter; INBOX in any case)."""
    full = reference + pat
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in "/*%"):
        full = "INBOX" + full[5:]
    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full)
    return re.compile(regex + r"\Z", re.S)


def _parents(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def _order(name: str) -> tuple[bool, str]:
    return (name != "INBOX", name)


@dataclass(frozen=True, kw_only=True)
class List(Command):
    name = "LIST"
    states = LOGGED_IN
    usage = "{cmd} needs a reference and a mailbox name"
    timed = True

    reference: str
    patterns: list[str]
    select: dict[str, Any] = field(default_factory=dict)  # selection options (name -> True)
    returns: dict[str, Any] = field(default_factory=dict)  # return options (name -> value)
    extended: bool = False  # any LIST-EXTENDED syntax was used

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "List":
        reg = p.registry
        r.sp()
        select: dict[str, Any] = {}
        extended = False
        if r.peek() == b"(":
            extended = True
            for s in r.paren_list(lambda: r.atom("a selection option"), what="a list of selection options"):
                s = s.upper()
                if s not in reg.list_select:
                    r.fail(f"Unknown LIST selection option {s[:40]}")
                select[s] = True
            if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
                r.fail("RECURSIVEMATCH needs another selection option")
            r.sp()
        reference = r.reference()
        r.sp()
        if r.peek() == b"(":
            extended = True
            patterns = r.paren_list(r.list_mailbox, allow_empty=False)
        else:
            patterns = [r.list_mailbox()]
        returns: dict[str, Any] = {}
        if r.take(b" "):
            r.expect(b"RETURN", "RETURN and return options")
            r.sp("RETURN needs a list of return options")
            extended = True

            def ret_opt() -> None:
                name = r.atom("a return option").upper()
                opt = reg.list_return.get(name)
                if opt is None:
                    r.fail(f"Unknown LIST return option {name[:40]}")
                if opt.parse is not None:
                    r.sp()
                    returns[name] = opt.parse(r)
                else:
                    returns[name] = True

            r.paren_list(ret_opt, what="a list of return options")
        return cls(tag=p.tag, reference=reference, patterns=patterns, select=select, returns=returns,
                   extended=extended)

    async def run(self, s: "Session") -> Reply:
        if not self.extended and self.patterns == [""]:
            root = "" if not self.reference else self.reference.split(DELIMITER)[0] + DELIMITER
            s.write(R.untagged(b"LIST (\\Noselect) \"/\" " + s.quote_mailbox(root if root != DELIMITER else "")))
            return ok("List completed")
        regexes = [pattern(self.reference, p) for p in self.patterns]

        def matched(name: str) -> bool:
            return any(rx.match(name) for rx in regexes)

        entries = await s.mailbox.list_folders()
        known = {e.name: e for e in entries}
        subscribed = set(s.mailbox.subscriptions())
        with_children = {parent for e in entries for parent in _parents(e.name)}
        only_subscribed = "SUBSCRIBED" in self.select
        recursive = only_subscribed and "RECURSIVEMATCH" in self.select
        show_subscribed = only_subscribed or "SUBSCRIBED" in self.returns
        if only_subscribed:
            names = set(subscribed)
            if "RECURSIVEMATCH" in self.select:
                names |= {parent for n in subscribed for parent in _parents(n)}
        else:
            names = set(known)
        keeps = [opt.keep for name, opt in s.registry.list_select.items() if name in self.select and opt.keep]
        afters = [(opt.after, self.returns[name]) for name, opt in s.registry.list_return.items()
                  if name in self.returns and opt.after]
        for name in sorted(names, key=_order):
            if not matched(name):
                continue
            entry = known.get(name)
            # RECURSIVEMATCH: CHILDINFO for a subscribed descendant the patterns do not list (RFC 5258
            # 3.5), whether or not the name itself is subscribed; a name that is not is listed only so
            childinfo = recursive and any(d.startswith(name + DELIMITER) and not matched(d) for d in subscribed)
            if only_subscribed and name not in subscribed and not childinfo:
                continue
            if keeps and (entry is None or not all(keep(entry) for keep in keeps)):
                continue
            attrs: list[str] = []
            if entry is None:
                attrs.append("\\NonExistent")
            elif not entry.selectable:  # only a parent: RFC 5258 says \NonExistent (implying \Noselect)
                attrs.append("\\NonExistent" if self.extended else "\\Noselect")
            if entry is not None or not only_subscribed:
                attrs.append("\\HasChildren" if name in with_children else "\\HasNoChildren")
            if show_subscribed and name in subscribed:
                attrs.append("\\Subscribed")
            if entry is not None and entry.special_use:
                attrs.append(entry.special_use)
            for rewrite in s.registry.list_attributes:
                attrs = rewrite(s, entry, attrs)
            line = b"LIST (" + " ".join(attrs).encode() + b') "/" ' + s.quote_mailbox(name)
            if childinfo:
                line += b' ("CHILDINFO" ("SUBSCRIBED"))'
            s.write(R.untagged(line))
            if entry is not None:
                for after, value in afters:
                    await after(s, entry, value)
            await s.flush_if_large()
        return ok("List completed")


@dataclass(frozen=True, kw_only=True)
class Lsub(Command):
    name = "LSUB"
    states = LOGGED_IN
    usage = "{cmd} needs a reference and a mailbox name"

    reference: str
    pattern: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Lsub":
        r.sp()
        reference = r.reference()
        r.sp()
        return cls(tag=p.tag, reference=reference, pattern=r.list_mailbox())

    async def run(self, s: "Session") -> Reply:
        rx = pattern(self.reference, self.pattern)
        subscribed = set(s.mailbox.subscriptions())
        entries = {e.name: e for e in await s.mailbox.list_folders()}
        shown: dict[str, bool] = {}
        for name in sorted(subscribed, key=_order):
            if rx.match(name):
                shown[name] = True
                continue
            for parent in reversed(_parents(name)):  # a '%' pattern shows the subscribed name's parent
                if rx.match(parent) and parent not in shown:
                    shown[parent] = parent in subscribed
                    break
        for name, is_sub in shown.items():
            entry = entries.get(name)
            flags = "" if is_sub and entry is not None and entry.selectable else "\\Noselect"
            s.write(R.untagged(b"LSUB (" + flags.encode() + b') "/" ' + s.quote_mailbox(name)))
        return ok("Lsub completed.")


def register(registry: Registry) -> None:
    registry.capability("LIST-EXTENDED")
    registry.capability("CHILDREN")
    for name in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH"):
        registry.list_select_option(ListOption(name))
    for name in ("SUBSCRIBED", "CHILDREN"):
        registry.list_return_option(ListOption(name))
    registry.command(List)
    registry.command(Lsub)
