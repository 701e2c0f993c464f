"""Comparators (RFC 4790, RFC 5228 section 2.7.3) and match types.

Pure functions over ``str``.  Match types: ``:is``, ``:contains``,
``:matches`` (RFC 5228 2.7.1) and the relational ``:value`` / ``:count``
(RFC 5231).  Comparators: ``i;octet`` (exact), ``i;ascii-casemap`` (A-Z
equal to a-z, nothing else folded; the default) and ``i;ascii-numeric``
(leading decimal digits as an unsigned number; a string without leading
digits is positive infinity, RFC 4790 9.1.1; no substring operations).

Strings are compared as Unicode code points: for ``i;octet`` that orders
exactly as UTF-8 octets do.  One deliberate difference from the letter of
RFC 5228 2.7.1: ``?`` in ``:matches`` stands for one character, not one
octet, so that it never splits a UTF-8 sequence (which would put broken text
into match variables).

``:matches`` patterns are glob patterns whose wildcards match as little as
possible, left to right (RFC 5229 3.2); :func:`glob` returns the substrings
each wildcard matched (the match variables).  It runs in time proportional
to value length × pattern length, never exponentially, whatever the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}

RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")


def ascii_lower(s: str) -> str:
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def _numeric(s: str) -> int | None:
    """i;ascii-numeric value: the leading digits, None (infinity) if none."""
    end = 0
    while end < len(s) and "0" <= s[end] <= "9":
        end += 1
    return int(s[:end]) if end else None


@dataclass(frozen=True)
class Comparator:
    name: str
    fold: Callable[[str], str] | None  # None: no substring operations
    numeric: bool = False

    def key(self, s: str) -> str:
        return self.fold(s) if self.fold else s

    def equal(self, a: str, b: str) -> bool:
        if self.numeric:
            return _numeric(a) == _numeric(b)
        return self.key(a) == self.key(b)

    def order(self, a: str, b: str) -> int:
        """-1, 0, 1 as a sorts before, with, after b."""
        if self.numeric:
            x, y = _numeric(a), _numeric(b)
            if x == y:
                return 0
            if x is None:
                return 1
            if y is None:
                return -1
            return -1 if x < y else 1
        ka, kb = self.key(a), self.key(b)
        return (ka > kb) - (ka < kb)

    @property
    def substring(self) -> bool:
        return not self.numeric


COMPARATORS: dict[str, Comparator] = {
    "i;octet": Comparator("i;octet", lambda s: s),
    "i;ascii-casemap": Comparator("i;ascii-casemap", ascii_lower),
    "i;ascii-numeric": Comparator("i;ascii-numeric", None, numeric=True),
}
DEFAULT_COMPARATOR = "i;ascii-casemap"


def relation_holds(relation: str, order: int) -> bool:
    if relation == "gt":
        return order > 0
    if relation == "ge":
        return order >= 0
    if relation == "lt":
        return order < 0
    if relation == "le":
        return order <= 0
    if relation == "eq":
        return order == 0
    return order != 0  # ne


# -- :matches ------------------------------------------------------------------------------

STAR = object()
QMARK = object()


def compile_glob(pattern: str) -> list[object]:
    """Pattern → list of STAR / QMARK / literal characters (``\\`` escapes the next character)."""
    out: list[object] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(pattern[i + 1])
            i += 2
            continue
        if ch == "*":
            out.append(STAR)
        elif ch == "?":
            out.append(QMARK)
        else:
            out.append(ch)
        i += 1
    return out


def _segment_at(seg: list[object], value: str, at: int, equal: Callable[[str, str], bool]) -> bool:
    for k, item in enumerate(seg):
        if item is QMARK:
            continue
        if not equal(value[at + k], item):  # type: ignore[arg-type]
            return False
    return True


def _find_segment(seg: list[object], value: str, start: int, stop: int,
                  equal: Callable[[str, str], bool], folded: tuple[str, list[str]] | None) -> int:
    """First index in [start, stop - len(seg)] where ``seg`` matches, or -1."""
    width = len(seg)
    last = stop - width
    if last < start:
        return -1
    if folded is not None and all(item is not QMARK for item in seg):
        # Pure literal: the fast C search on folded strings.
        fvalue, fseg = folded
        return fvalue.find("".join(fseg), start, stop)
    for at in range(start, last + 1):
        if _segment_at(seg, value, at, equal):
            return at
    return -1


def glob(pattern: str, value: str, comparator: Comparator, tick: Callable[[], None] | None = None
         ) -> list[str] | None:
    """Match ``value`` against the ``:matches`` pattern; the match variables
    (``[0]`` the whole value, then one string per wildcard) or None."""
    items = compile_glob(pattern)
    fold = comparator.fold or (lambda s: s)
    fvalue = fold(value)
    # Segments: the runs of literals and ?, between stars.
    segments: list[list[object]] = [[]]
    for item in items:
        if item is STAR:
            segments.append([])
        else:
            segments[-1].append(fold(item) if isinstance(item, str) else item)

    def equal(a: str, b: str) -> bool:
        return fold(a) == b

    n = len(value)
    first, rest = segments[0], segments[1:]
    captures: list[str] = []
    if not rest:  # no star: the whole value is one segment
        if len(first) != n or not _segment_at(first, value, 0, equal):
            return None
        captures = [value[k] for k, it in enumerate(first) if it is QMARK]
        return [value] + captures
    # The first segment is anchored at the start, the last at the end.
    if len(first) > n or not _segment_at(first, value, 0, equal):
        return None
    captures.extend(value[k] for k, it in enumerate(first) if it is QMARK)
    last = rest[-1]
    end_start = n - len(last)
    if end_start < len(first) or not _segment_at(last, value, end_start, equal):
        return None
    pos = len(first)
    for seg in rest[:-1]:
        if tick:
            tick()
        if not seg:  # two stars in a row: the first matches the empty string
            captures.append("")
            continue
        literal = [it for it in seg if it is not QMARK]
        at = _find_segment(seg, value, pos, end_start, equal,
                           (fvalue, literal) if len(literal) == len(seg) else None)
        if at < 0:
            return None
        captures.append(value[pos:at])
        captures.extend(value[at + k] for k, it in enumerate(seg) if it is QMARK)
        pos = at + len(seg)
    captures.append(value[pos:end_start])
    captures.extend(value[end_start + k] for k, it in enumerate(last) if it is QMARK)
    return [value] + captures


def contains(value: str, key: str, comparator: Comparator) -> bool:
    return comparator.key(key) in comparator.key(value)
