"""What each command and test accepts: the tables the compiler checks against.

Pure data.  Every command and test of RFC 5228 and of the supported
extensions is one :class:`Spec`: its kind, the capability that must be
required to use it, its tagged arguments (each with the capability it needs
and the group of mutually exclusive tags it belongs to), its positional
arguments, and whether it takes tests or a block.  :mod:`.compiler` reads
these tables; :mod:`.interpreter` implements the same names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Arg(enum.Enum):
    STRING = "a string"
    STRINGS = "a string list"
    NUMBER = "a number"


@dataclass(frozen=True)
class TagSpec:
    name: str
    group: str  # tags of one group exclude each other
    arg: Arg | None = None
    capability: tuple[str, ...] = ()  # any of these must be required; () none


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "command" (action or control) or "test"
    capability: tuple[str, ...] = ()
    tags: tuple[TagSpec, ...] = ()
    positional: tuple[Arg, ...] = ()
    min_positional: int | None = None  # fewer than all: the first ones are optional
    tests: str = "none"  # "none", "one", "list" (a parenthesised test list)
    block: bool = False
    positional_names: tuple[str, ...] = ()

    def tag(self, name: str) -> TagSpec | None:
        for t in self.tags:
            if t.name == name:
                return t
        return None

    @property
    def required_positional(self) -> int:
        return len(self.positional) if self.min_positional is None else self.min_positional


# Supported capabilities (what ManageSieve advertises as SIEVE).
CAPABILITIES: tuple[str, ...] = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "copy", "body",
    "variables", "vacation", "vacation-seconds", "relational", "subaddress", "date", "index", "mailbox",
    "spamtest", "spamtestplus", "virustest", "include", "duplicate",
    "comparator-i;octet", "comparator-i;ascii-casemap", "comparator-i;ascii-numeric",
)

# Extensions people ask for that correo does not have: named in errors.
KNOWN_UNSUPPORTED = {
    "enotify": "RFC 5435 notifications", "notify": "the draft notify extension",
    "editheader": "RFC 5293 header editing", "regex": "the regex draft", "environment": "RFC 5183",
    "ihave": "RFC 5463", "mime": "RFC 5703", "extracttext": "RFC 5703", "foreverypart": "RFC 5703",
    "replace": "RFC 5703", "enclose": "RFC 5703", "imapsieve": "RFC 6785", "mboxmetadata": "RFC 5490",
    "servermetadata": "RFC 5490", "special-use": "RFC 8579", "extlists": "RFC 6134", "convert": "RFC 6558",
    "fcc": "RFC 8580", "redirect-dsn": "RFC 6009", "redirect-deliverby": "RFC 6009", "envelope-dsn": "RFC 6009",
    "envelope-deliverby": "RFC 6009", "comparator-i;unicode-casemap": "RFC 5051", "imapflags": "an old draft",
    "report": "RFC 9537",
}

COMPARATOR = TagSpec("comparator", "comparator", Arg.STRING)
MATCH_TYPE = (
    TagSpec("is", "match"), TagSpec("contains", "match"), TagSpec("matches", "match"),
    TagSpec("count", "match", Arg.STRING, ("relational",)),
    TagSpec("value", "match", Arg.STRING, ("relational",)),
)
ADDRESS_PART = (
    TagSpec("all", "address-part"), TagSpec("localpart", "address-part"), TagSpec("domain", "address-part"),
    TagSpec("user", "address-part", capability=("subaddress",)),
    TagSpec("detail", "address-part", capability=("subaddress",)),
)
INDEX = (TagSpec("index", "index", Arg.NUMBER, ("index",)), TagSpec("last", "last", capability=("index",)))
ZONE = (TagSpec("zone", "zone", Arg.STRING), TagSpec("originalzone", "zone"))
FLAGS = TagSpec("flags", "flags", Arg.STRINGS, ("imap4flags",))
COPY = TagSpec("copy", "copy", capability=("copy",))

S, L, N = Arg.STRING, Arg.STRINGS, Arg.NUMBER

SPECS: dict[str, Spec] = {s.name: s for s in (
    # -- control (RFC 5228 section 3, RFC 6609) ---------------------------------------------
    Spec("require", "command", positional=(L,), positional_names=("capabilities",)),
    Spec("if", "command", tests="one", block=True),
    Spec("elsif", "command", tests="one", block=True),
    Spec("else", "command", block=True),
    Spec("stop", "command"),
    Spec("include", "command", ("include",), tags=(
        TagSpec("personal", "location"), TagSpec("global", "location"),
        TagSpec("once", "once"), TagSpec("optional", "optional")), positional=(S,),
        positional_names=("script name",)),
    Spec("return", "command", ("include",)),
    Spec("global", "command", ("include",), positional=(L,), positional_names=("variable names",)),
    # -- actions (RFC 5228 section 4 and extensions) -----------------------------------------
    Spec("keep", "command", tags=(FLAGS,)),
    Spec("discard", "command"),
    Spec("fileinto", "command", ("fileinto",), tags=(
        FLAGS, COPY, TagSpec("create", "create", capability=("mailbox",))), positional=(S,),
        positional_names=("folder",)),
    Spec("redirect", "command", tags=(COPY,), positional=(S,), positional_names=("address",)),
    Spec("reject", "command", ("reject",), positional=(S,), positional_names=("reason",)),
    Spec("ereject", "command", ("ereject",), positional=(S,), positional_names=("reason",)),
    Spec("vacation", "command", ("vacation", "vacation-seconds"), tags=(
        TagSpec("days", "period", N), TagSpec("seconds", "period", N, ("vacation-seconds",)),
        TagSpec("subject", "subject", S), TagSpec("from", "from", S),
        TagSpec("addresses", "addresses", L), TagSpec("mime", "mime"),
        TagSpec("handle", "handle", S)), positional=(S,), positional_names=("reason",)),
    Spec("set", "command", ("variables",), tags=(
        TagSpec("lower", "case40"), TagSpec("upper", "case40"),
        TagSpec("lowerfirst", "case30"), TagSpec("upperfirst", "case30"),
        TagSpec("quotewildcard", "quotewildcard"), TagSpec("length", "length")),
        positional=(S, S), positional_names=("name", "value")),
    Spec("setflag", "command", ("imap4flags",), positional=(S, L), min_positional=1,
         positional_names=("variable name", "flags")),
    Spec("addflag", "command", ("imap4flags",), positional=(S, L), min_positional=1,
         positional_names=("variable name", "flags")),
    Spec("removeflag", "command", ("imap4flags",), positional=(S, L), min_positional=1,
         positional_names=("variable name", "flags")),
    # -- tests (RFC 5228 section 5 and extensions) ------------------------------------------
    Spec("true", "test"),
    Spec("false", "test"),
    Spec("not", "test", tests="one"),
    Spec("allof", "test", tests="list"),
    Spec("anyof", "test", tests="list"),
    Spec("exists", "test", positional=(L,), positional_names=("header names",)),
    Spec("size", "test", tags=(TagSpec("over", "size"), TagSpec("under", "size")), positional=(N,),
         positional_names=("limit",)),
    Spec("header", "test", tags=(COMPARATOR, *MATCH_TYPE, *INDEX), positional=(L, L),
         positional_names=("header names", "keys")),
    Spec("address", "test", tags=(COMPARATOR, *MATCH_TYPE, *ADDRESS_PART, *INDEX), positional=(L, L),
         positional_names=("header names", "keys")),
    Spec("envelope", "test", ("envelope",), tags=(COMPARATOR, *MATCH_TYPE, *ADDRESS_PART), positional=(L, L),
         positional_names=("envelope parts", "keys")),
    Spec("body", "test", ("body",), tags=(
        COMPARATOR, *MATCH_TYPE, TagSpec("raw", "transform"), TagSpec("content", "transform", L),
        TagSpec("text", "transform")), positional=(L,), positional_names=("keys",)),
    Spec("string", "test", ("variables",), tags=(COMPARATOR, *MATCH_TYPE), positional=(L, L),
         positional_names=("source", "keys")),
    Spec("hasflag", "test", ("imap4flags",), tags=(COMPARATOR, *MATCH_TYPE), positional=(L, L),
         min_positional=1, positional_names=("variable names", "flags")),
    Spec("date", "test", ("date",), tags=(COMPARATOR, *MATCH_TYPE, *ZONE, *INDEX), positional=(S, S, L),
         positional_names=("header name", "date part", "keys")),
    Spec("currentdate", "test", ("date",), tags=(COMPARATOR, *MATCH_TYPE, ZONE[0]), positional=(S, L),
         positional_names=("date part", "keys")),
    Spec("mailboxexists", "test", ("mailbox",), positional=(L,), positional_names=("folders",)),
    Spec("spamtest", "test", ("spamtest", "spamtestplus"), tags=(
        COMPARATOR, *MATCH_TYPE, TagSpec("percent", "percent", capability=("spamtestplus",))),
        positional=(S,), positional_names=("value",)),
    Spec("virustest", "test", ("virustest",), tags=(COMPARATOR, *MATCH_TYPE), positional=(S,),
         positional_names=("value",)),
    Spec("duplicate", "test", ("duplicate",), tags=(
        TagSpec("handle", "handle", S), TagSpec("header", "id", S), TagSpec("uniqueid", "id", S),
        TagSpec("seconds", "seconds", N), TagSpec("last", "last"))),
)}

# Headers the address test may read (RFC 5228 5.1: at least From, To, Cc,
# Bcc, Sender, Resent-From, Resent-To; SHOULD: any address-list field).
ADDRESS_HEADERS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-bcc", "resent-reply-to", "return-path", "return-receipt-to", "errors-to",
    "disposition-notification-to", "delivered-to", "envelope-to", "x-original-to", "x-envelope-to",
    "original-recipient", "mail-followup-to", "mail-reply-to", "x-delivered-to", "approved-by",
    "x-beenthere", "list-post-to",
})

ENVELOPE_PARTS = ("from", "to")
