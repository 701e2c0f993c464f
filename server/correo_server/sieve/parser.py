"""Tokens → syntax tree (RFC 5228 section 8.2), before any meaning is checked.

Pure.  The grammar::

    start     = commands
    commands  = *command
    command   = identifier arguments (";" / block)
    block     = "{" commands "}"
    arguments = *argument [ test / test-list ]
    argument  = string-list / number / tag
    test      = identifier arguments
    test-list = "(" test *("," test) ")"
    string-list = "[" string *("," string) "]" / string

The tree keeps each node's line and column; :mod:`.compiler` gives it
meaning (which commands exist, what their arguments are).  Nesting of blocks
and test lists is limited (RFC 5228 section 2.10.7 asks for at least 15).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Diagnostic, SieveSyntaxError
from .lexer import Kind, Lexer, Token, decode_script

MAX_NESTING = 32


@dataclass
class StringArg:
    value: str
    line: int
    column: int
    multiline: bool = False


@dataclass
class StringListArg:
    items: list[StringArg]
    line: int
    column: int
    bracketed: bool = False


@dataclass
class NumberArg:
    value: int
    line: int
    column: int
    text: str = ""


@dataclass
class TagArg:
    name: str  # lower case, without the colon
    line: int
    column: int
    text: str = ""


Argument = StringListArg | NumberArg | TagArg


@dataclass
class TestNode:
    name: str  # lower case
    line: int
    column: int
    args: list[Argument] = field(default_factory=list)
    tests: list["TestNode"] = field(default_factory=list)
    test_list: bool = False  # the tests were given in parentheses
    text: str = ""


@dataclass
class CommandNode:
    name: str  # lower case
    line: int
    column: int
    args: list[Argument] = field(default_factory=list)
    tests: list[TestNode] = field(default_factory=list)
    test_list: bool = False
    block: list["CommandNode"] | None = None  # None: ended with ";"
    text: str = ""
    end_line: int = 0  # where the block's "}" or the ";" is
    end_column: int = 0


class Parser:
    def __init__(self, text: str, script: str = "script") -> None:
        self.lexer = Lexer(text, script)
        self.script = script
        self.tok: Token = self.lexer.next()
        self.depth = 0

    def error(self, message: str, tok: Token | None = None) -> SieveSyntaxError:
        tok = tok or self.tok
        return SieveSyntaxError(Diagnostic(message, tok.line, tok.column, self.script))

    def advance(self) -> Token:
        tok, self.tok = self.tok, self.lexer.next()
        return tok

    def _nest(self, what: str) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"{what} nested too deeply (more than {MAX_NESTING} levels)")

    # -- commands ---------------------------------------------------------------------
    def parse(self) -> list[CommandNode]:
        commands = self.commands()
        if self.tok.kind is not Kind.EOF:
            if self.tok.kind is Kind.RBRACE:
                raise self.error("'}' without a matching '{'")
            raise self.error(f"expected a command, found {self.tok.describe()}")
        return commands

    def commands(self) -> list[CommandNode]:
        out: list[CommandNode] = []
        while self.tok.kind is Kind.IDENTIFIER:
            out.append(self.command())
        return out

    def command(self) -> CommandNode:
        ident = self.advance()
        node = CommandNode(str(ident.value), ident.line, ident.column, text=ident.text)
        node.args, node.tests, node.test_list = self.arguments(node.text)
        if self.tok.kind is Kind.SEMICOLON:
            end = self.advance()
            node.end_line, node.end_column = end.line, end.column
            return node
        if self.tok.kind is Kind.LBRACE:
            open_ = self.advance()
            self._nest("blocks")
            node.block = self.commands()
            self.depth -= 1
            if self.tok.kind is not Kind.RBRACE:
                if self.tok.kind is Kind.EOF:
                    raise self.error(f"the block of '{node.text}' opened at line {open_.line}, "
                                     f"column {open_.column} is not closed with '}}'")
                raise self.error(f"expected a command or '}}', found {self.tok.describe()}")
            end = self.advance()
            node.end_line, node.end_column = end.line, end.column
            return node
        raise self.error(f"expected ';' or '{{' to end the '{node.text}' command, found {self.tok.describe()}"
                         + (" (is a ';' missing on the line before?)"
                            if self.tok.kind is Kind.IDENTIFIER and self.tok.line > node.line else ""))

    # -- arguments --------------------------------------------------------------------
    def arguments(self, owner: str) -> tuple[list[Argument], list[TestNode], bool]:
        args: list[Argument] = []
        while True:
            kind = self.tok.kind
            if kind is Kind.TAG:
                tok = self.advance()
                args.append(TagArg(str(tok.value), tok.line, tok.column, tok.text))
            elif kind is Kind.NUMBER:
                tok = self.advance()
                args.append(NumberArg(int(tok.value), tok.line, tok.column, tok.text))  # type: ignore[arg-type]
            elif kind is Kind.STRING:
                tok = self.advance()
                args.append(StringListArg([StringArg(str(tok.value), tok.line, tok.column, tok.multiline)],
                                          tok.line, tok.column))
            elif kind is Kind.LBRACKET:
                args.append(self.string_list())
            else:
                break
        if self.tok.kind is Kind.IDENTIFIER:
            return args, [self.test()], False
        if self.tok.kind is Kind.LPAREN:
            return args, self.test_list(), True
        return args, [], False

    def string_list(self) -> StringListArg:
        open_ = self.advance()
        items: list[StringArg] = []
        while True:
            if self.tok.kind is not Kind.STRING:
                if self.tok.kind is Kind.RBRACKET and not items:
                    raise self.error("a string list must hold at least one string")
                raise self.error(f"expected a string in the string list, found {self.tok.describe()}")
            tok = self.advance()
            items.append(StringArg(str(tok.value), tok.line, tok.column, tok.multiline))
            if self.tok.kind is Kind.COMMA:
                self.advance()
                continue
            if self.tok.kind is Kind.RBRACKET:
                self.advance()
                return StringListArg(items, open_.line, open_.column, bracketed=True)
            raise self.error(f"expected ',' or ']' in the string list opened at line {open_.line}, "
                             f"column {open_.column}, found {self.tok.describe()}")

    def test(self) -> TestNode:
        if self.tok.kind is not Kind.IDENTIFIER:
            raise self.error(f"expected a test, found {self.tok.describe()}")
        ident = self.advance()
        node = TestNode(str(ident.value), ident.line, ident.column, text=ident.text)
        self._nest("tests")
        node.args, node.tests, node.test_list = self.arguments(node.text)
        self.depth -= 1
        return node

    def test_list(self) -> list[TestNode]:
        open_ = self.advance()
        self._nest("test lists")
        tests = [self.test()]
        while self.tok.kind is Kind.COMMA:
            self.advance()
            tests.append(self.test())
        if self.tok.kind is not Kind.RPAREN:
            raise self.error(f"expected ',' or ')' in the test list opened at line {open_.line}, "
                             f"column {open_.column}, found {self.tok.describe()}")
        self.advance()
        self.depth -= 1
        return tests


def parse(data: bytes | str, script: str = "script") -> list[CommandNode]:
    """Parse a whole script; raises :class:`~.errors.SieveSyntaxError`."""
    return Parser(decode_script(data, script), script).parse()
