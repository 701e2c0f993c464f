"""Syntax tree → :class:`Script`, checked against :mod:`.spec`.

``compile_script(text, name=...)`` is the one entry point callers use
(``correo validate``, ManageSieve's PUTSCRIPT/CHECKSCRIPT, the mailstore
before running): it parses (:mod:`.parser`), then checks every command and
test (known, required, arguments of the right kind and number, tags not
repeated or conflicting, constant strings where RFCs demand them,
``elsif``/``else`` after ``if``) and collects every problem it finds into one
:class:`~.errors.SieveCompileError`, each with line and column.  Unsupported
extensions are named as such.

The result is immutable and holds no reference to the text: string
arguments are plain ``str`` or :class:`~.strings.Template` (with
``variables``), numbers are ``int``, and each test carries its comparator and
match type resolved.  :mod:`.interpreter` runs it.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from . import spec as specmod
from .addresses import parse_address_list, parse_path
from .comparators import COMPARATORS, DEFAULT_COMPARATOR, RELATIONS, Comparator
from .dates import DATE_PARTS, parse_zone
from .errors import Diagnostic, SieveCompileError, SieveSyntaxError
from .parser import CommandNode, NumberArg, StringArg, StringListArg, TagArg, TestNode, parse
from .spec import Arg, Spec
from .strings import (VARIABLE_NAME, EncodingError, ReferenceError_, Template, Value, decode_encoded,
                      is_constant, template)

MAX_SCRIPT_BYTES = 1 << 20  # Pigeonhole's default sieve_max_script_size

_SCRIPT_NAME_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/]")


@dataclass(frozen=True)
class Match:
    comparator: Comparator
    type: str  # "is", "contains", "matches", "count", "value"
    relation: str | None = None


@dataclass
class Call:
    """A command or test with its arguments resolved."""

    name: str
    line: int
    column: int
    tags: dict[str, object] = field(default_factory=dict)  # tag → argument, or True
    args: list[object] = field(default_factory=list)  # Value, list[Value] or int
    tests: list["Call"] = field(default_factory=list)
    block: list["Node"] | None = None
    match: Match | None = None
    address_part: str = "all"


@dataclass
class If:
    line: int
    column: int
    branches: list[tuple[Call, list["Node"]]]
    otherwise: list["Node"] | None = None


Node = Call | If


@dataclass(frozen=True)
class Script:
    name: str
    commands: tuple[Node, ...]
    capabilities: frozenset[str]
    size: int = 0

    def requires(self, capability: str) -> bool:
        return capability in self.capabilities


def valid_script_name(name: str) -> str | None:
    """None if ``name`` is a valid script name (RFC 5804 1.6, and no '/'), else why not."""
    if not name:
        return "a script name cannot be empty"
    if len(name) > 512:
        return "a script name is at most 512 characters"
    m = _SCRIPT_NAME_BAD.search(name)
    if m:
        ch = m.group(0)
        return "a script name cannot hold '/'" if ch == "/" else "a script name cannot hold control characters"
    if name in (".", ".."):
        return "'.' and '..' are not script names"
    return None


def valid_folder_name(name: str) -> str | None:
    if not name:
        return "a folder name cannot be empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "a folder name cannot hold control characters"
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return "a folder name must be valid UTF-8"
    if len(name.encode("utf-8")) > 1000:
        return "the folder name is too long"
    return None


def valid_address(text: str) -> str | None:
    """None if ``text`` is a sieve-address (RFC 5228 2.4.2.3), else why not."""
    items = parse_address_list(text)
    if len(items) != 1:
        return "expected exactly one address"
    addr = items[0]
    if not addr.valid or not addr.local or not addr.domain or addr.raw == "<>":
        return "not an address of the form user@domain"
    return None


class _Checker:
    def __init__(self, script: str) -> None:
        self.script = script
        self.errors: list[Diagnostic] = []
        self.caps: set[str] = set()

    def err(self, message: str, line: int, column: int) -> None:
        if len(self.errors) < 50:
            self.errors.append(Diagnostic(message, line, column, self.script))

    # -- strings --------------------------------------------------------------------------
    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset({"global"}) if "include" in self.caps else frozenset()

    def string(self, arg: StringArg, *, constant: bool = False) -> Value:
        value = arg.value
        if "encoded-character" in self.caps:
            try:
                value = decode_encoded(value)
            except EncodingError as exc:
                self.err(str(exc), arg.line, arg.column)
        if "variables" in self.caps and not constant:
            try:
                return template(value, namespaces=self.namespaces)
            except ReferenceError_ as exc:
                self.err(str(exc), arg.line, arg.column)
        return value

    # -- the script -----------------------------------------------------------------------
    def commands(self, nodes: list[CommandNode], top: bool) -> list[Node]:
        out: list[Node] = []
        seen_other = False
        i = 0
        while i < len(nodes):
            node = nodes[i]
            if node.name == "require":
                if not top or seen_other:
                    self.err("'require' must come before every other command, at the top of the script",
                             node.line, node.column)
                else:
                    self.require(node)
                i += 1
                continue
            seen_other = True
            if node.name in ("elsif", "else"):
                self.err(f"'{node.text}' without an 'if' before it", node.line, node.column)
                i += 1
                continue
            if node.name == "if":
                chain = [node]
                i += 1
                while i < len(nodes) and nodes[i].name in ("elsif", "else"):
                    chain.append(nodes[i])
                    i += 1
                    if chain[-1].name == "else":
                        break
                out.append(self.if_chain(chain))
                continue
            call = self.call(node, "command")
            if call is not None:
                out.append(call)
            i += 1
        return out

    def require(self, node: CommandNode) -> None:
        if node.tests or node.block is not None or len(node.args) != 1 or not isinstance(node.args[0], StringListArg):
            self.err("usage: require <capabilities: string-list>;", node.line, node.column)
            return
        for item in node.args[0].items:
            cap = item.value
            if cap in specmod.CAPABILITIES:
                self.caps.add(cap)
                if cap == "vacation-seconds":
                    self.caps.add("vacation")
                if cap == "spamtestplus":
                    self.caps.add("spamtest")
            elif cap in specmod.KNOWN_UNSUPPORTED or cap.startswith("vnd."):
                what = specmod.KNOWN_UNSUPPORTED.get(cap, "a vendor extension")
                self.err(f"the extension '{cap}' ({what}) is not supported here; supported: "
                         + ", ".join(specmod.CAPABILITIES), item.line, item.column)
            else:
                close = difflib.get_close_matches(cap, specmod.CAPABILITIES, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.err(f"unknown extension '{cap}'{hint}", item.line, item.column)

    def if_chain(self, chain: list[CommandNode]) -> If:
        first = chain[0]
        result = If(first.line, first.column, [])
        for node in chain:
            call = self.call(node, "command")
            block = call.block if call is not None and call.block is not None else []
            if node.name == "else":
                result.otherwise = block
            elif call is not None and call.tests:
                result.branches.append((call.tests[0], block))
        return result

    def lookup(self, node: CommandNode | TestNode, kind: str) -> Spec | None:
        spec = specmod.SPECS.get(node.name)
        if spec is None:
            names = [s.name for s in specmod.SPECS.values() if s.kind == kind]
            close = difflib.get_close_matches(node.name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.err(f"unknown {'test' if kind == 'test' else 'command'} '{node.text}'{hint}", node.line, node.column)
            return None
        if spec.kind != kind:
            if kind == "command":
                self.err(f"'{node.text}' is a test, not a command: use it in 'if {node.text} ...'",
                         node.line, node.column)
            else:
                self.err(f"'{node.text}' is a command, not a test", node.line, node.column)
            return None
        if spec.capability and not (set(spec.capability) & self.caps):
            self.err(f"'{node.text}' needs the '{spec.capability[0]}' extension: add "
                     f"require \"{spec.capability[0]}\"; at the top of the script", node.line, node.column)
            return None
        return spec

    def call(self, node: CommandNode | TestNode, kind: str) -> Call | None:
        spec = self.lookup(node, kind)
        if spec is None:
            return None
        call = Call(spec.name, node.line, node.column)
        what = f"'{node.text}'"
        # Tests and blocks.
        if spec.tests == "none" and node.tests:
            self.err(f"{what} takes no test", node.tests[0].line, node.tests[0].column)
        elif spec.tests == "one":
            if len(node.tests) != 1 or node.test_list:
                self.err(f"{what} needs exactly one test" + (" (use allof/anyof to combine tests)"
                                                            if node.test_list else ""), node.line, node.column)
        elif spec.tests == "list" and not node.test_list:
            self.err(f"{what} needs a list of tests in parentheses: {node.text} (test, test)", node.line, node.column)
        for t in node.tests:
            sub = self.call(t, "test")
            if sub is not None:
                call.tests.append(sub)
        if isinstance(node, CommandNode):
            if spec.block and node.block is None:
                self.err(f"{what} needs a block: {{ ... }}", node.line, node.column)
            elif not spec.block and node.block is not None:
                self.err(f"{what} takes no block; end it with ';'", node.line, node.column)
            if node.block is not None and spec.block:
                call.block = self.commands(node.block, top=False)
        before = len(self.errors)
        self.arguments(spec, node, call)
        if len(self.errors) == before:
            self.semantics(spec, node, call)
        return call

    # -- arguments ------------------------------------------------------------------------------
    def arguments(self, spec: Spec, node: CommandNode | TestNode, call: Call) -> None:
        what = f"'{node.text}'"
        args = node.args
        groups: dict[str, str] = {}
        i = 0
        while i < len(args) and isinstance(args[i], TagArg):
            tag_arg = args[i]
            assert isinstance(tag_arg, TagArg)
            tag = spec.tag(tag_arg.name)
            i += 1
            if tag is None:
                self.err(f"{what} has no tag '{tag_arg.text}'" + self._tag_hint(spec, tag_arg.name),
                         tag_arg.line, tag_arg.column)
                continue
            if tag.capability and not (set(tag.capability) & self.caps):
                self.err(f"the tag '{tag_arg.text}' needs the '{tag.capability[0]}' extension: add "
                         f"require \"{tag.capability[0]}\";", tag_arg.line, tag_arg.column)
            if tag.group in groups:
                other = groups[tag.group]
                if other == tag.name:
                    self.err(f"the tag '{tag_arg.text}' is given twice", tag_arg.line, tag_arg.column)
                else:
                    self.err(f"the tags ':{other}' and '{tag_arg.text}' cannot be used together",
                             tag_arg.line, tag_arg.column)
                if tag.arg is not None and i < len(args) and not isinstance(args[i], TagArg):
                    i += 1
                continue
            groups[tag.group] = tag.name
            if tag.arg is None:
                call.tags[tag.name] = True
                continue
            if i >= len(args) or isinstance(args[i], TagArg):
                self.err(f"the tag '{tag_arg.text}' needs {tag.arg.value} after it", tag_arg.line, tag_arg.column)
                call.tags[tag.name] = None
                continue
            value = self.value(args[i], tag.arg, f"the tag '{tag_arg.text}'",
                               constant=tag.name in ("comparator", "count", "value"))
            call.tags[tag.name] = value
            i += 1
        positional = args[i:]
        for extra in positional:
            if isinstance(extra, TagArg):
                self.err(f"the tag '{extra.text}' must come before the other arguments of {what}",
                         extra.line, extra.column)
        positional = [a for a in positional if not isinstance(a, TagArg)]
        want = spec.positional
        need = spec.required_positional
        if len(positional) < need or len(positional) > len(want):
            count = f"{need}" if need == len(want) else f"{need} to {len(want)}"
            names = ", ".join(spec.positional_names)
            self.err(f"{what} takes {count} argument{'s' if len(want) != 1 else ''}"
                     + (f" ({names})" if names else "") + f", found {len(positional)}", node.line, node.column)
            return
        # With optional leading arguments (setflag [var] flags), the given ones are the last ones.
        kinds = want[len(want) - len(positional):]
        for arg, kind in zip(positional, kinds):
            call.args.append(self.value(arg, kind, what))
        if len(positional) < len(want):
            call.args[0:0] = [None] * (len(want) - len(positional))

    def _tag_hint(self, spec: Spec, name: str) -> str:
        for other in specmod.SPECS.values():
            if other.tag(name) is not None and other.name != spec.name:
                return ""
        close = difflib.get_close_matches(name, [t.name for t in spec.tags], n=1)
        return f"; did you mean ':{close[0]}'?" if close else ""

    def value(self, arg, kind: Arg, what: str, *, constant: bool = False):
        if kind is Arg.NUMBER:
            if not isinstance(arg, NumberArg):
                self.err(f"{what} expects a number here", arg.line, arg.column)
                return 0
            return arg.value
        if not isinstance(arg, StringListArg):
            self.err(f"{what} expects {kind.value} here, found a number", arg.line, arg.column)
            return "" if kind is Arg.STRING else [""]
        if kind is Arg.STRING:
            if arg.bracketed:
                self.err(f"{what} expects a string here, found a string list", arg.line, arg.column)
            return self.string(arg.items[0], constant=constant)
        return [self.string(item, constant=constant) for item in arg.items]

    # -- per-command checks ---------------------------------------------------------------------
    def match(self, node, call: Call) -> None:
        cname = call.tags.get("comparator") or DEFAULT_COMPARATOR
        assert isinstance(cname, str)
        comparator = COMPARATORS.get(cname)
        if comparator is None:
            self.err(f"unknown comparator '{cname}' (supported: {', '.join(COMPARATORS)})", node.line, node.column)
            comparator = COMPARATORS[DEFAULT_COMPARATOR]
        elif cname not in ("i;octet", "i;ascii-casemap") and f"comparator-{cname}" not in self.caps:
            self.err(f"the comparator '{cname}' must be required: add require \"comparator-{cname}\";",
                     node.line, node.column)
        mtype = next((t for t in ("is", "contains", "matches", "count", "value") if t in call.tags), "is")
        relation = None
        if mtype in ("count", "value"):
            relation = call.tags.get(mtype)
            if not isinstance(relation, str) or relation.lower() not in RELATIONS:
                self.err(f"':{mtype}' needs a relation: one of {', '.join(repr(r) for r in RELATIONS)}",
                         node.line, node.column)
                relation = "eq"
            relation = relation.lower()
        if mtype in ("contains", "matches") and not comparator.substring:
            self.err(f"the comparator '{comparator.name}' cannot be used with ':{mtype}'", node.line, node.column)
        call.match = Match(comparator, mtype, relation)

    def semantics(self, spec: Spec, node, call: Call) -> None:
        name = spec.name
        if any(t.name == "comparator" for t in spec.tags):
            self.match(node, call)
        for part in ("all", "localpart", "domain", "user", "detail"):
            if part in call.tags:
                call.address_part = part
        if "last" in call.tags and "index" not in call.tags and name != "duplicate":
            self.err("':last' needs ':index'", node.line, node.column)
        if "index" in call.tags and isinstance(call.tags["index"], int) and call.tags["index"] < 1:
            self.err("':index' counts from 1", node.line, node.column)
        getattr(self, f"check_{name}", lambda *a: None)(node, call)

    def _constant(self, value, what: str, node) -> bool:
        if not is_constant(value):
            self.err(f"{what} must be a constant string (no variables)", node.line, node.column)
            return False
        return True

    def check_address(self, node, call: Call) -> None:
        for h in call.args[0]:
            if is_constant(h) and h.lower() not in specmod.ADDRESS_HEADERS:
                self.err(f"the address test cannot read the header '{h}': it holds no addresses "
                         f"(use the header test)", node.line, node.column)

    def check_envelope(self, node, call: Call) -> None:
        for part in call.args[0]:
            if is_constant(part) and part.lower() not in specmod.ENVELOPE_PARTS:
                self.err(f"unknown envelope part '{part}' (known: from, to)", node.line, node.column)

    def check_body(self, node, call: Call) -> None:
        if call.match and call.match.type == "count":
            self.err("the body test does not take ':count'", node.line, node.column)

    def check_size(self, node, call: Call) -> None:
        if "over" not in call.tags and "under" not in call.tags:
            self.err("'size' needs ':over' or ':under'", node.line, node.column)

    def check_date(self, node, call: Call) -> None:
        self._date_part(call.args[1], node)
        self._zone(call, node)

    def check_currentdate(self, node, call: Call) -> None:
        self._date_part(call.args[0], node)
        self._zone(call, node)

    def _date_part(self, part, node) -> None:
        if is_constant(part) and part.lower() not in DATE_PARTS:
            self.err(f"unknown date part '{part}' (known: {', '.join(DATE_PARTS)})", node.line, node.column)

    def _zone(self, call: Call, node) -> None:
        zone = call.tags.get("zone")
        if isinstance(zone, str) and parse_zone(zone) is None:
            self.err(f"invalid time zone '{zone}': expected +hhmm or -hhmm", node.line, node.column)

    def check_fileinto(self, node, call: Call) -> None:
        folder = call.args[0]
        if is_constant(folder):
            why = valid_folder_name(folder)
            if why:
                self.err(f"invalid folder name '{folder}': {why}", node.line, node.column)

    def check_redirect(self, node, call: Call) -> None:
        address = call.args[0]
        if is_constant(address):
            why = valid_address(address)
            if why:
                self.err(f"invalid redirect address '{address}': {why}", node.line, node.column)

    def check_vacation(self, node, call: Call) -> None:
        sender = call.tags.get("from")
        if isinstance(sender, str):
            why = valid_address(sender)
            if why:
                self.err(f"invalid ':from' address '{sender}': {why}", node.line, node.column)
        for addr in call.tags.get("addresses") or []:
            if isinstance(addr, str) and valid_address(addr):
                self.err(f"invalid address '{addr}' in ':addresses'", node.line, node.column)
        if call.tags.get("mime"):
            reason = call.args[0]
            if isinstance(reason, str):
                head = reason.split("\r\n\r\n", 1)[0]
                if not head.isascii():
                    self.err("with ':mime' the reason's MIME header must be ASCII", node.line, node.column)

    def check_set(self, node, call: Call) -> None:
        name = call.args[0]
        if not self._constant(name, "the variable name of 'set'", node):
            return
        bare = name
        if "." in name:
            ns, _, bare = name.partition(".")
            if ns.lower() != "global" or "include" not in self.caps:
                self.err(f"cannot set '{name}': unknown namespace '{ns}'", node.line, node.column)
                return
        if not VARIABLE_NAME.match(bare):
            self.err(f"invalid variable name '{name}'" + (" (match variables cannot be set)"
                                                          if bare.isdigit() else ""), node.line, node.column)

    def check_global(self, node, call: Call) -> None:
        if "variables" not in self.caps:
            self.err("'global' needs both the 'include' and the 'variables' extensions: add "
                     "require \"variables\";", node.line, node.column)
        for name in call.args[0]:
            if self._constant(name, "a global variable name", node) and not VARIABLE_NAME.match(name):
                self.err(f"invalid variable name '{name}'", node.line, node.column)

    def check_include(self, node, call: Call) -> None:
        name = call.args[0]
        if isinstance(name, Template):
            call.args[0] = name = name.source  # RFC 6609: never expanded
        why = valid_script_name(name)
        if why:
            self.err(f"invalid script name '{name}': {why}", node.line, node.column)

    def _flag_variable(self, node, call: Call) -> None:
        var = call.args[0]
        if var is None:
            return
        if "variables" not in self.caps:
            self.err(f"'{node.text}' with a variable name needs the 'variables' extension", node.line, node.column)
        elif self._constant(var, "the variable name", node) and not VARIABLE_NAME.match(var):
            self.err(f"invalid variable name '{var}'", node.line, node.column)

    check_setflag = check_addflag = check_removeflag = _flag_variable

    def check_hasflag(self, node, call: Call) -> None:
        if call.args[0] is not None and "variables" not in self.caps:
            self.err("'hasflag' with variable names needs the 'variables' extension", node.line, node.column)

    def check_duplicate(self, node, call: Call) -> None:
        pass


def compile_script(data: bytes | str, name: str = "script", *, max_size: int = MAX_SCRIPT_BYTES) -> Script:
    """Parse and check a Sieve script.

    Raises :class:`~.errors.SieveSyntaxError` or
    :class:`~.errors.SieveCompileError` (every problem found, each with line
    and column)."""
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > max_size:
        raise SieveCompileError(Diagnostic(f"the script is {size} bytes, more than the {max_size} allowed",
                                           1, 1, name))
    tree = parse(data, name)
    checker = _Checker(name)
    commands = checker.commands(tree, top=True)
    if checker.errors:
        raise SieveCompileError(checker.errors)
    return Script(name, tuple(commands), frozenset(checker.caps), size)


__all__ = ["Script", "Call", "If", "Match", "compile_script", "SieveSyntaxError", "SieveCompileError",
           "valid_script_name", "valid_address", "valid_folder_name", "parse_path"]
