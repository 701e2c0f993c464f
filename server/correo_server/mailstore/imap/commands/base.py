"""What a command module is made of: :class:`Command` (one IMAP command:
its syntax, the states it is valid in, the capability it belongs to, and
its handler, together), the connection :class:`State` flags, :class:`Reply`,
and the :class:`Registry` every module registers into — commands,
capabilities, and the extension points of other commands (ENABLE targets,
STATUS items, SELECT parameters, FETCH items and modifiers, STORE
modifiers, SEARCH keys and result options, SORT criteria, LIST options,
CREATE parameters, APPEND data forms).  See the package docstring for how
to add an extension.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Iterable, NamedTuple

from ..reader import TAG, BadCommand, Fail, Reader
from ..states import StateFlag as State

if TYPE_CHECKING:
    from ..session import Session


ANY = State.NOT_AUTHENTICATED | State.AUTHENTICATED | State.SELECTED
LOGGED_IN = State.AUTHENTICATED | State.SELECTED


class Reply(NamedTuple):
    """The tagged reply: ``tag status [code] text``."""

    status: str  # OK, NO or BAD
    text: str
    code: str | None = None


def ok(text: str, code: str | None = None) -> Reply:
    return Reply("OK", text, code)


def no(text: str, code: str | None = None) -> Reply:
    return Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> Reply:
    return Reply("BAD", text, code)


class Refused(Exception):
    """Raised by an extension's hook to end the command with this reply
    (e.g. ``BAD`` for a SELECT parameter the session has not enabled)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Parse:
    """What a command's parser gets besides the :class:`Reader`."""

    tag: str
    uid: bool  # sent as ``UID <name>``
    registry: "Registry"


@dataclass(frozen=True, kw_only=True)
class Command:
    """One IMAP command.  A subclass is a frozen dataclass whose fields are
    the command's typed arguments, with the class variables below; it reads
    itself from a :class:`Reader` (:meth:`parse`) and runs against a session
    (:meth:`run`), returning the tagged reply (None when it wrote it)."""

    name: ClassVar[str]
    states: ClassVar[State]
    capability: ClassVar[str | None] = None  # listed while the command is registered (None: IMAP4rev1)
    capability_when: ClassVar["When"] = None  # type: ignore[assignment]  # default: after login
    uid_form: ClassVar[bool] = False  # "UID <name>" exists
    usage: ClassVar[str] = "Missing arguments"  # said when the command ends too early ({cmd}, {set})
    timed: ClassVar[bool] = False  # the OK text says how long it took, as Dovecot's does

    tag: str
    uid: bool = False
    invalid_mailbox: str | None = None  # a mailbox argument that is not modified UTF-7 (refused NO)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Command":
        """Read the arguments after the command name (default: none)."""
        return cls(tag=p.tag, uid=p.uid)

    async def run(self, s: "Session") -> Reply | None:
        raise NotImplementedError

    def reports_expunges(self) -> bool:
        """Whether expunges by others may be reported after this command
        (RFC 3501 7.4.1: never after FETCH, STORE or SEARCH, unless UID)."""
        return True


# ---------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------

class When(enum.Flag):
    BEFORE_LOGIN = enum.auto()
    AFTER_LOGIN = enum.auto()
    ALWAYS = BEFORE_LOGIN | AFTER_LOGIN


CapabilityValue = str | Callable[["Session"], "str | Iterable[str] | None"]


@dataclass(frozen=True)
class Capability:
    """One entry of the CAPABILITY response.  ``value`` is the word, or a
    function of the session giving the words (or None) — for capabilities
    that depend on TLS, the plaintext rule or the configuration."""

    value: CapabilityValue
    when: When = When.AFTER_LOGIN
    order: int = 100  # IMAP4rev1 first (0); then the login-related ones; then the rest in module order
    module: str = ""

    def words(self, s: "Session") -> list[str]:
        v = self.value(s) if callable(self.value) else self.value
        if v is None:
            return []
        return [v] if isinstance(v, str) else list(v)


# ---------------------------------------------------------------------------
# Extension points of other commands
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Enableable:
    """An ENABLE target (RFC 5161): ``on_enable`` switches it on for the session."""

    name: str
    on_enable: Callable[["Session"], None]


@dataclass(frozen=True)
class StatusItem:
    """A STATUS data item: its value for a folder (``on_request`` runs first,
    e.g. HIGHESTMODSEQ switching CONDSTORE on).  A value that is not a
    number, or needs I/O, comes from ``fetch`` instead: the item's value as
    it goes out (OBJECTID's ``MAILBOXID (F...)``)."""

    name: str
    value: Callable[[Any], int] | None = None  # (folder) -> number
    on_request: Callable[["Session"], None] | None = None
    fetch: Callable[["Session", Any], Awaitable[bytes]] | None = None  # (session, folder) -> encoded value


@dataclass(frozen=True)
class Modifier:
    """A parameter in parentheses after a command's arguments: SELECT
    ``(CONDSTORE)``, FETCH ``(CHANGEDSINCE 5)``, STORE ``(UNCHANGEDSINCE 5)``.
    ``parse`` reads its value after the name (None: no value, True is stored)."""

    name: str
    parse: Callable[[Reader], Any] | None = None
    on_use: Callable[["Session", Any], None] | None = None  # runs before the command does
    keep: Callable[[Any, Any], bool] | None = None  # FETCH: (message, value) -> report it?
    # FETCH: runs once the messages are known, before any is reported (session, value, command, UIDs)
    before: Callable[["Session", Any, Any, list[int]], Awaitable[None]] | None = None
    # SELECT/EXAMINE: runs after the command's untagged responses (session, value, command);
    # CREATE: applies the parameter to the new folder (session, value, folder)
    after: Callable[["Session", Any, Any], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Options:
    """The modifiers a command was given: name → value."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def apply(self, s: "Session", table: dict[str, Modifier]) -> None:
        for name, value in self.values.items():
            hook = table[name].on_use
            if hook is not None:
                hook(s, value)


@dataclass(frozen=True)
class ListOption:
    """A LIST-EXTENDED (RFC 5258) selection or return option.  ``parse``
    reads its value after a space (return options such as ``STATUS
    (...)``); a selection option may ``keep`` only some folders; a return
    option may write more after each LIST line (``after``)."""

    name: str
    parse: Callable[[Reader], Any] | None = None
    keep: Callable[[Any], bool] | None = None  # (FolderEntry) -> listed?
    after: Callable[["Session", Any, Any], Awaitable[None]] | None = None  # (session, FolderEntry, value)


@dataclass(frozen=True)
class SearchReturn:
    """A SEARCH result option (RFC 4466 ``SEARCH RETURN (...)``): ESEARCH's
    MIN, MAX, ALL, COUNT, SEARCHRES's SAVE.  ``parse`` reads a value after
    the name; ``render`` gives the option's part of the ESEARCH response
    (None: nothing to say); ``on_result`` runs once the messages are found
    (SAVE keeps them).  Given any, the reply is the registry's
    ``search_reply`` (ESEARCH's) instead of ``* SEARCH``."""

    name: str
    parse: Callable[[Reader], Any] | None = None
    render: Callable[["Found", Any], bytes | None] | None = None
    on_result: Callable[["Session", "Found", "Options"], None] | None = None


@dataclass(frozen=True)
class Found:
    """What a SEARCH (or SORT) found: the UIDs, in the order of the reply,
    with the numbers the client sees (UIDs for ``UID SEARCH``, else message
    sequence numbers) and their MODSEQs; ``modseq``: a MODSEQ key was used
    (RFC 7162 3.1.5: the reply carries the highest MODSEQ)."""

    tag: str
    uid: bool
    uids: list[int]
    numbers: list[int]
    modseqs: list[int]
    modseq: bool = False
    sorted: bool = False  # SORT: in the order asked for, not ascending
    key: Any = None  # SEARCH: the search key (CONTEXT=SEARCH's UPDATE runs it again)


SearchReply = Callable[["Session", Found, "Options"], None]


@dataclass(frozen=True)
class SortKey:
    """A SORT criterion (RFC 5256; SORT=DISPLAY adds two): the value a
    message sorts by, from its index entry and its header summary
    (:class:`..summary.Summary`; None when the criterion needs none)."""

    name: str
    key: Callable[[Any, Any], Any]  # (MessageInfo, Summary | None) -> comparable
    needs_summary: bool = True


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

_NAME = re.compile(rb"[A-Za-z0-9.=+-]+")


class Registry:
    """Every command, capability and extension point, from the modules that
    registered them (:func:`.build_registry`)."""

    def __init__(self) -> None:
        self.commands: dict[str, type[Command]] = {}
        self.capability_list: list[Capability] = []
        self.enableable: dict[str, Enableable] = {}
        self.status_items: dict[str, StatusItem] = {}
        self.select_modifiers: dict[str, Modifier] = {}
        self.fetch_modifiers: dict[str, Modifier] = {}
        self.store_modifiers: dict[str, Modifier] = {}
        self.fetch_items: dict[str, Callable[[Reader, str], Any]] = {}  # name -> parser of the item
        self.search_keys: dict[str, Callable[[Reader, str, int], Any]] = {}  # name -> parser of the key
        self.list_select: dict[str, ListOption] = {}
        self.list_return: dict[str, ListOption] = {}
        self.search_returns: dict[str, SearchReturn] = {}
        self.search_reply: SearchReply | None = None  # writes the reply when RETURN is used (ESEARCH)
        self.search_defaults: list[Callable[["Session"], "Options | None"]] = []  # RETURN when none given
        self.saved_sets = False  # "$" stands for the saved search result (SEARCHRES)
        self.sort_keys: dict[str, SortKey] = {}
        self.view_setup: list[Callable[["Session", Any], None]] = []  # (session, SelectedView) on SELECT
        # after the selected view's updates are written (each command, IDLE): more of them (CONTEXT=SEARCH)
        self.after_sync: list[Callable[["Session"], Awaitable[None]]] = []
        self.report_closed = False  # SELECT over a selected mailbox says OK [CLOSED] (QRESYNC, IMAP4rev2)
        self.sort_returns = False  # SORT RETURN (...) (ESORT)
        self.append_data: list[Callable[[Reader], bytes | None]] = []  # other forms of APPEND's message
        self.select_responses: list[Callable[["Session", Any], Awaitable[list[bytes]]]] = []  # more SELECT lines
        # LIST attributes of an entry, rewritten by a session mode: (session, FolderEntry | None, attributes)
        self.list_attributes: list[Callable[["Session", Any, list[str]], list[str]]] = []
        self.multiappend = False  # APPEND takes several messages (MULTIAPPEND)
        self.create_params: dict[str, Modifier] = {}  # CREATE name (PARAM value) (RFC 4466; CREATE-SPECIAL-USE)
        self.create_codes: list[Callable[["Session", Any], Awaitable[str | None]]] = []  # CREATE's OK [code]
        # a session mode's objection to a command before it runs (UIDONLY: BAD [UIDREQUIRED])
        self.command_checks: list[Callable[["Session", Command], Reply | None]] = []
        self.module = ""  # the module registering now (for the capability's origin)
        self._ordered: dict[When, tuple[list[Capability], list[Capability]]] = {}

    # -- registering -----------------------------------------------------------
    def command(self, cls: type[Command]) -> type[Command]:
        if cls.name in self.commands:
            raise ValueError(f"IMAP command {cls.name} registered twice")
        self.commands[cls.name] = cls
        if cls.capability:
            self.capability(cls.capability, when=cls.capability_when or When.AFTER_LOGIN)
        return cls

    def capability(self, value: CapabilityValue, *, when: When = When.AFTER_LOGIN, order: int = 100) -> None:
        if isinstance(value, str) and any(c.value == value for c in self.capability_list):
            return
        self.capability_list.append(Capability(value, when, order, self.module))

    def enable(self, name: str, on_enable: Callable[["Session"], None]) -> None:
        """An ENABLE target; ``name`` as ENABLED says it (IMAP4rev2), matched in any case."""
        self.enableable[name.upper()] = Enableable(name, on_enable)

    def status_item(self, item: StatusItem) -> None:
        self.status_items[item.name] = item

    def select_modifier(self, m: Modifier) -> None:
        self.select_modifiers[m.name] = m

    def fetch_modifier(self, m: Modifier) -> None:
        self.fetch_modifiers[m.name] = m

    def create_param(self, m: Modifier) -> None:
        """A CREATE parameter: ``on_use`` checks it before the folder is made
        (raise :class:`Refused`), ``after`` applies it to the new folder."""
        self.create_params[m.name] = m

    def store_modifier(self, m: Modifier) -> None:
        self.store_modifiers[m.name] = m

    def fetch_item(self, name: str, parse: Callable[[Reader, str], Any]) -> None:
        self.fetch_items[name] = parse

    def search_key(self, name: str, parse: Callable[[Reader, str, int], Any]) -> None:
        self.search_keys[name] = parse

    def search_return(self, option: SearchReturn) -> None:
        self.search_returns[option.name] = option

    def search_default(self, fn: Callable[["Session"], "Options | None"]) -> None:
        """A session mode that answers every SEARCH as if ``RETURN (...)``
        were given (IMAP4rev2: ESEARCH always)."""
        self.search_defaults.append(fn)

    def sort_key(self, key: SortKey) -> None:
        self.sort_keys[key.name] = key

    def list_select_option(self, option: ListOption) -> None:
        self.list_select[option.name] = option

    def list_return_option(self, option: ListOption) -> None:
        self.list_return[option.name] = option

    # -- using -------------------------------------------------------------------
    def capabilities(self, s: "Session", *, logged_in: bool) -> list[str]:
        want = When.AFTER_LOGIN if logged_in else When.BEFORE_LOGIN
        ordered = self._ordered.get(want)
        if ordered is None or len(ordered[1]) != len(self.capability_list):
            chosen = [c for c in sorted(self.capability_list, key=lambda c: c.order) if c.when & want]
            ordered = self._ordered[want] = (chosen, list(self.capability_list))  # stable: module order kept
        out: list[str] = []
        for cap in ordered[0]:
            if isinstance(cap.value, str):
                if cap.value not in out:
                    out.append(cap.value)
            else:
                out += [w for w in cap.words(s) if w not in out]
        return out

    def uid_commands(self) -> list[str]:
        return [n for n, c in self.commands.items() if c.uid_form]

    def parse(self, buf: bytes, *, utf8_names: bool = False) -> Command:
        """Parse one complete command (CRLF-terminated, literals inline).
        ``utf8_names``: mailbox names come as UTF-8 (IMAP4rev2, UTF8=ACCEPT)."""
        r = Reader(buf)
        r.saved_sets = self.saved_sets
        r.utf8_names = utf8_names
        m = TAG.match(buf)
        if m is None:
            raise BadCommand(None, "Error in IMAP command: no tag")
        r.pos = m.end()
        tag = m.group(0).decode("ascii")
        name = ""
        uid = False
        try:
            r.sp()
            name = r.atom("a command name").upper()
            if name == "UID":
                forms = self.uid_commands()
                r.usage = "UID needs a command: " + ", ".join(forms[:-1]) + " or " + forms[-1]
                r.sp()
                name = r.atom("a command name").upper()
                cls = self.commands.get(name)
                if cls is None or not cls.uid_form:
                    raise BadCommand(tag, f"Unknown UID command {name[:40]}")
                uid = True
            cls = self.commands.get(name)
            if cls is None:
                raise BadCommand(tag, f"Unknown command {name[:40]}")
            r.usage = cls.usage.format(cmd=("UID " if uid else "") + name,
                                       set="UID set" if uid else "message set")
            cmd = cls.parse(r, Parse(tag, uid, self))
            r.end()
        except Fail as exc:
            if exc.whole:
                raise BadCommand(tag, str(exc)) from None
            where = f" {'UID ' if uid else ''}{name[:40]}" if name else ""
            raise BadCommand(tag, f"Error in IMAP command{where}: {exc}") from None
        except RecursionError:
            raise BadCommand(tag, "Error in IMAP command: Too deeply nested") from None
        if r.invalid_mailbox is not None:
            cmd = replace(cmd, invalid_mailbox=r.invalid_mailbox)
        return cmd


def modifiers(r: Reader, table: dict[str, Modifier], what: str, *, allow_empty: bool = False) -> Options:
    """``(NAME value NAME ...)`` of the modifiers in ``table``; the reader is
    at the ``(``.  ``what`` names them in errors (``a FETCH modifier``)."""
    values: dict[str, Any] = {}

    def item() -> None:
        name = r.atom(what).upper()
        m = table.get(name)
        if m is None:
            r.fail(f"Unknown {what.removeprefix('a ').removeprefix('an ')} {name[:40]}")
        if m.parse is None:
            values[name] = True
        else:
            r.sp()
            values[name] = m.parse(r)

    r.paren_list(item, allow_empty=allow_empty, what=f"a list of {what.removeprefix('a ')}s")
    return Options(values)


Handler = Callable[["Session"], Awaitable[Reply | None]]
