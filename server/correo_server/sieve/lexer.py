"""Sieve text → tokens (RFC 5228 section 8.1), each with its line and column.

Pure: no I/O.  :mod:`.parser` consumes the tokens.  What this module accepts
beyond the letter of the RFC, as other implementations do: bare LF line ends
(scripts edited on Unix), which count as CRLF; string values always carry
CRLF line ends, whatever the script used.  What it refuses: NUL, a CR not
followed by LF, text that is not UTF-8, unterminated strings and comments,
numbers too large for 63 bits.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import Diagnostic, SieveSyntaxError

MAX_NUMBER = 2**63 - 1
_QUANTIFIERS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class Kind(enum.Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    LBRACKET = "["
    RBRACKET = "]"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    SEMICOLON = ";"
    EOF = "end of script"


_SEPARATORS = {
    "[": Kind.LBRACKET, "]": Kind.RBRACKET, "(": Kind.LPAREN, ")": Kind.RPAREN,
    "{": Kind.LBRACE, "}": Kind.RBRACE, ",": Kind.COMMA, ";": Kind.SEMICOLON,
}


@dataclass(frozen=True)
class Token:
    kind: Kind
    value: str | int | None  # identifier/tag name (lower case), number, string value
    line: int
    column: int
    text: str = ""  # as written (for messages)
    multiline: bool = False  # a text: string

    def describe(self) -> str:
        if self.kind is Kind.EOF:
            return "the end of the script"
        if self.kind is Kind.STRING:
            return "a string"
        if self.kind is Kind.NUMBER:
            return f"the number {self.text}"
        if self.kind is Kind.TAG:
            return f"the tag '{self.text}'"
        if self.kind is Kind.IDENTIFIER:
            return f"'{self.text}'"
        return f"'{self.kind.value}'"


def _is_ident_start(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "_"


def _is_ident_char(ch: str) -> bool:
    return _is_ident_start(ch) or ("0" <= ch <= "9")


def decode_script(data: bytes | str, script: str = "script") -> str:
    """The script as text with LF line ends; errors name line and column."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = data[: exc.start]
            line = before.count(b"\n") + 1
            col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
            raise SieveSyntaxError(Diagnostic("the script is not valid UTF-8", line, col, script)) from None
    else:
        text = data
    if text.startswith("\ufeff"):  # a BOM some editors write
        text = text[1:]
    text = text.replace("\r\n", "\n")
    for bad, what in (("\x00", "a NUL character"), ("\r", "a carriage return not followed by a line feed")):
        at = text.find(bad)
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            col = at - (text.rfind("\n", 0, at) + 1) + 1
            raise SieveSyntaxError(Diagnostic(f"{what} is not allowed in a script", line, col, script))
    return text


class Lexer:
    def __init__(self, text: str, script: str = "script") -> None:
        self.text = text
        self.script = script
        self.pos = 0
        self.line = 1
        self.line_start = 0

    # -- helpers ----------------------------------------------------------------------
    def _col(self, pos: int | None = None) -> int:
        return (self.pos if pos is None else pos) - self.line_start + 1

    def error(self, message: str, line: int | None = None, column: int | None = None) -> SieveSyntaxError:
        return SieveSyntaxError(Diagnostic(message, line or self.line, column or self._col(), self.script))

    def _newline_at(self, pos: int) -> None:
        """Account for the LF at ``pos``."""
        self.line += 1
        self.line_start = pos + 1

    def _advance_over(self, start: int, end: int) -> None:
        """Move to ``end``, counting the line feeds in text[start:end]."""
        text = self.text
        at = text.find("\n", start, end)
        while at >= 0:
            self._newline_at(at)
            at = text.find("\n", at + 1, end)
        self.pos = end

    # -- whitespace and comments -----------------------------------------------------------
    def _skip_blank(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch == "\n":
                self._newline_at(self.pos)
                self.pos += 1
            elif ch in " \t":
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif ch == "/" and text.startswith("/*", self.pos):
                line, col = self.line, self._col()
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment: '/*' without its '*/'", line, col)
                self._advance_over(self.pos, end + 2)
            else:
                return

    # -- tokens ---------------------------------------------------------------------------
    def tokens(self) -> list[Token]:
        out: list[Token] = []
        while True:
            tok = self.next()
            out.append(tok)
            if tok.kind is Kind.EOF:
                return out

    def next(self) -> Token:
        self._skip_blank()
        text = self.text
        if self.pos >= len(text):
            return Token(Kind.EOF, None, self.line, self._col())
        line, col, start = self.line, self._col(), self.pos
        ch = text[start]
        if ch in _SEPARATORS:
            self.pos += 1
            return Token(_SEPARATORS[ch], ch, line, col, ch)
        if ch == '"':
            return self._quoted(line, col)
        if ch == ":":
            end = start + 1
            if end >= len(text) or not _is_ident_start(text[end]):
                raise self.error("a ':' must start a tag such as ':contains'", line, col)
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            name = text[start + 1:end]
            self.pos = end
            return Token(Kind.TAG, name.lower(), line, col, ":" + name)
        if "0" <= ch <= "9":
            return self._number(line, col)
        if _is_ident_start(ch):
            end = start + 1
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            word = text[start:end]
            if word.lower() == "text" and text.startswith(":", end):
                self.pos = end + 1
                return self._multiline(line, col)
            self.pos = end
            return Token(Kind.IDENTIFIER, word.lower(), line, col, word)
        shown = ch if ch.isprintable() else f"U+{ord(ch):04X}"
        raise self.error(f"unexpected character '{shown}'", line, col)

    def _number(self, line: int, col: int) -> Token:
        text, start = self.text, self.pos
        end = start
        while end < len(text) and "0" <= text[end] <= "9":
            end += 1
        value = int(text[start:end])
        if end < len(text) and text[end].upper() in _QUANTIFIERS:
            value *= _QUANTIFIERS[text[end].upper()]
            end += 1
        if end < len(text) and _is_ident_char(text[end]):
            raise self.error(f"invalid number '{text[start:end + 1]}': digits may only be followed by K, M or G",
                             line, col)
        if value > MAX_NUMBER:
            raise self.error(f"the number {text[start:end]} is too large", line, col)
        self.pos = end
        return Token(Kind.NUMBER, value, line, col, text[start:end])

    def _quoted(self, line: int, col: int) -> Token:
        text = self.text
        pos = self.pos + 1
        parts: list[str] = []
        chunk_start = pos
        while True:
            # Jump to the next quote or backslash.
            q = text.find('"', pos)
            b = text.find("\\", pos)
            if q < 0:
                raise self.error("unterminated string: a '\"' without its closing '\"'", line, col)
            if 0 <= b < q:
                parts.append(text[chunk_start:b])
                if b + 1 >= len(text):
                    raise self.error("unterminated string: a '\"' without its closing '\"'", line, col)
                # RFC 5228 2.4.2: \" and \\ are escapes; any other \x is x.
                parts.append(text[b + 1])
                pos = chunk_start = b + 2
                continue
            parts.append(text[chunk_start:q])
            end = q + 1
            break
        value = "".join(parts)
        self._advance_over(self.pos, end)
        return Token(Kind.STRING, value.replace("\n", "\r\n"), line, col, "string")

    def _multiline(self, line: int, col: int) -> Token:
        text, n = self.text, len(self.text)
        pos = self.pos
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
        if pos >= n or text[pos] != "\n":
            raise self.error("'text:' must be followed by the end of the line", line, col)
        self._advance_over(self.pos, pos + 1)
        lines: list[str] = []
        while True:
            if self.pos >= n:
                raise self.error("unterminated multi-line string: 'text:' without a line holding only '.'",
                                 line, col)
            end = text.find("\n", self.pos)
            if end < 0:
                if text[self.pos:] == ".":  # the final "." without its line end
                    self.pos = n
                    break
                raise self.error("unterminated multi-line string: 'text:' without a line holding only '.'",
                                 line, col)
            row = text[self.pos:end]
            self._advance_over(self.pos, end + 1)
            if row == ".":
                break
            if row.startswith(".."):
                row = row[1:]
            lines.append(row)
        value = "".join(row + "\r\n" for row in lines)
        return Token(Kind.STRING, value, line, col, "text:", multiline=True)


def tokenize(data: bytes | str, script: str = "script") -> list[Token]:
    return Lexer(decode_script(data, script), script).tokens()
