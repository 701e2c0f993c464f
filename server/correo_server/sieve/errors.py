"""The errors of the Sieve engine, each with the script's name, line and column.

Three kinds, as RFC 5228 section 2.10.6 distinguishes them:

* :class:`SieveSyntaxError`: the text is not Sieve (lexer and parser); the
  first one stops parsing.
* :class:`SieveCompileError`: the text parses but cannot run (an unknown
  command, a wrong argument, an extension not required or not supported).
  The compiler collects all it finds; ``errors`` lists them, ``str()`` shows
  them one per line.
* :class:`SieveRuntimeError`: found while running (too many actions, a
  conflicting reject, an include that is missing...).  The interpreter never
  raises it to its caller: it ends the run with an implicit keep and returns
  the error in :attr:`~.actions.Result.error` for the caller to log and count.

``str(error)`` reads ``script:line:column: message`` (``line 3, column 7`` in
:meth:`Diagnostic.human`), the form editors and ``correo validate`` show.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem at one place of a script."""

    message: str
    line: int
    column: int
    script: str = "script"

    def __str__(self) -> str:
        return f"{self.script}:{self.line}:{self.column}: {self.message}"

    def human(self) -> str:
        """``line 3, column 7: message`` (for ManageSieve replies and status fields)."""
        return f"line {self.line}, column {self.column}: {self.message}"


class SieveError(Exception):
    """Base of the engine's errors; ``diagnostics`` has at least one entry."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic) -> None:
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        if not diagnostics:
            raise ValueError("a SieveError needs a diagnostic")
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    @property
    def line(self) -> int:
        return self.first.line

    @property
    def column(self) -> int:
        return self.first.column

    @property
    def message(self) -> str:
        return self.first.message

    def human(self) -> str:
        return "; ".join(d.human() for d in self.diagnostics)


class SieveSyntaxError(SieveError):
    """The script is not well-formed Sieve (RFC 5228 section 8)."""


class SieveCompileError(SieveError):
    """The script is well-formed but invalid: commands, arguments, extensions."""


class SieveRuntimeError(SieveError):
    """An error while running; the run ends with an implicit keep."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic, *, kind: str = "error") -> None:
        # kind: a short label for metrics ("limit", "conflict", "include", "error")
        self.kind = kind
        super().__init__(diagnostics)
