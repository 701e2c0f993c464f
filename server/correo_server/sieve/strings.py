"""What a Sieve string literal means once extensions are required.

Two transformations, both decided at compile time, applied in this order
(RFC 5229 section 3.1: quoting first, then encoded characters, then
variables):

* ``encoded-character`` (RFC 5228 section 2.4.2.4): ``${hex:40 41}`` and
  ``${unicode:1F600}`` are replaced by the characters they name;
  :func:`decode_encoded` does it once, at compile time.
* ``variables`` (RFC 5229 section 3): ``${name}``, ``${0}``..``${9}`` and
  ``${global.name}`` are references expanded each time the string is used;
  :func:`template` turns the literal into a :class:`Template` (or leaves a
  plain ``str`` when nothing refers to a variable, a "constant string").

Pure; :mod:`.compiler` calls these, :mod:`.interpreter` expands templates.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_MATCH_INDEX = 9

_BLANK = r"[ \t\r\n]"
_ENCODED = re.compile(
    r"\$\{(hex|unicode):(" + _BLANK + r"*[0-9A-Fa-f]+(?:" + _BLANK + r"+[0-9A-Fa-f]+)*" + _BLANK + r"*)\}",
    re.IGNORECASE,
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_VARREF = re.compile(r"\$\{(" + _IDENT + r"(?:\.(?:" + _IDENT + r"|[0-9]+))*|[0-9]+)\}")
VARIABLE_NAME = re.compile(r"^" + _IDENT + r"$")


class EncodingError(ValueError):
    """An encoded character outside Unicode's scalar values (RFC 5228 2.4.2.4)."""


def decode_encoded(value: str) -> str:
    """Replace well-formed ``${hex:..}`` / ``${unicode:..}`` sequences.

    A sequence that is not well-formed stays as written (``${hex:400}``);
    a well-formed ``${unicode:}`` naming a surrogate or a value above
    U+10FFFF raises :class:`EncodingError`."""
    if "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        kind = m.group(1).lower()
        items = m.group(2).split()
        if kind == "hex":
            if any(len(h) > 2 for h in items):
                return m.group(0)
            raw = bytes(int(h, 16) for h in items)
            # Octets that are not UTF-8 survive as U+DC80..U+DCFF (surrogateescape).
            return raw.decode("utf-8", "surrogateescape")
        out = []
        for h in items:
            code = int(h, 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise EncodingError(f"${{unicode:{h}}} is not a Unicode character "
                                    "(allowed: 0 to D7FF and E000 to 10FFFF)")
            out.append(chr(code))
        return "".join(out)

    return _ENCODED.sub(replace, value)


@dataclass(frozen=True)
class Var:
    name: str  # lower case
    namespace: str | None = None  # "global"


@dataclass(frozen=True)
class MatchVar:
    index: int


Part = str | Var | MatchVar


@dataclass(frozen=True)
class Template:
    """A string with variable references, expanded at run time."""

    source: str  # as written (after quoting and encoded characters)
    parts: tuple[Part, ...]

    def __str__(self) -> str:
        return self.source


Value = str | Template


class ReferenceError_(ValueError):
    """A variable reference the script may not make (unknown namespace, ${10})."""


def template(value: str, *, namespaces: frozenset[str] = frozenset()) -> Value:
    """Parse ``value`` for variable references (RFC 5229 section 3).

    Returns ``value`` unchanged when it refers to no variable.  Raises
    :class:`ReferenceError_` for a match variable above ${9} or a namespace
    not in ``namespaces``."""
    if "${" not in value:
        return value
    parts: list[Part] = []
    last = 0
    for m in _VARREF.finditer(value):
        ref = m.group(1)
        if m.start() > last:
            parts.append(value[last:m.start()])
        last = m.end()
        if ref.isdigit():
            index = int(ref)
            if index > MAX_MATCH_INDEX:
                raise ReferenceError_(f"match variable ${{{ref}}} is out of range (${{0}} to ${{{MAX_MATCH_INDEX}}})")
            parts.append(MatchVar(index))
            continue
        pieces = ref.split(".")
        if len(pieces) == 1:
            parts.append(Var(ref.lower()))
            continue
        namespace = pieces[0].lower()
        if namespace not in namespaces:
            raise ReferenceError_(f"unknown variable namespace '{pieces[0]}' in ${{{ref}}}"
                                  + (" (require \"include\" for the global namespace)" if namespace == "global" else ""))
        if namespace == "global" and (len(pieces) != 2 or not VARIABLE_NAME.match(pieces[1])):
            raise ReferenceError_(f"invalid global variable name in ${{{ref}}}")
        parts.append(Var(pieces[-1].lower(), namespace))
    if not parts or (len(parts) == 1 and isinstance(parts[0], str)):
        return value
    if last < len(value):
        parts.append(value[last:])
    return Template(value, tuple(parts))


def source(value: Value) -> str:
    """The string as written, before expansion."""
    return value.source if isinstance(value, Template) else value


def is_constant(value: Value) -> bool:
    return not isinstance(value, Template)


def quote_wildcards(value: str) -> str:
    """RFC 5229 4.1.2 ``:quotewildcard``."""
    return value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
