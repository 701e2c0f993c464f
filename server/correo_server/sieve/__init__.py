"""Sieve (RFC 5228) for correo: a compiler and an interpreter, kept apart.

The mail rules of a mailbox, run at final delivery.  Two steps, two modules:

* :func:`compile_script` (:mod:`.compiler`, over :mod:`.lexer` and
  :mod:`.parser`): text → :class:`Script`, or an error naming line and column
  (``correo validate``, ManageSieve PUTSCRIPT/CHECKSCRIPT and the mailstore
  use it).
* :func:`run` (:mod:`.interpreter`): (script, message, :class:`Envelope`,
  :class:`Context`) → :class:`Result`, a list of actions (:mod:`.actions`)
  the mailstore carries out.  Pure: the clock, the tracking state
  (vacation, duplicate), the include resolver, folder existence and the
  scanners' verdict come in through the context; nothing is written or sent.

Extensions: fileinto, reject, ereject, envelope, encoded-character,
imap4flags, copy, body, variables, vacation, vacation-seconds, relational,
subaddress, date, index, mailbox, spamtest, spamtestplus, virustest,
include, duplicate; comparators i;octet, i;ascii-casemap, i;ascii-numeric
(:data:`CAPABILITIES`).  Vacation decisions and replies: :mod:`.vacation`;
redirect and reject messages: :mod:`.outgoing`; a file-backed tracking
state: :mod:`.tracking`.

This package imports nothing else of correo but :mod:`correo_server.osutil`
(for the tracking file): the operator's
``correo validate`` may import the compiler, the mailstore the whole of it.
"""
from __future__ import annotations

from .actions import (Action, Discard, FileInto, Keep, OutgoingMessage, Redirect, Reject, Result, StateUpdate,
                      Vacation)
from .compiler import Script, compile_script, valid_script_name
from .context import Context, Envelope, IncludeResolver, Limits, ScanVerdict, TrackingState
from .errors import Diagnostic, SieveCompileError, SieveError, SieveRuntimeError, SieveSyntaxError
from .interpreter import run
from .spec import CAPABILITIES

__all__ = [
    "Action", "CAPABILITIES", "Context", "Diagnostic", "Discard", "Envelope", "FileInto", "IncludeResolver",
    "Keep", "Limits", "OutgoingMessage", "Redirect", "Reject", "Result", "ScanVerdict", "Script",
    "SieveCompileError", "SieveError", "SieveRuntimeError", "SieveSyntaxError", "StateUpdate", "TrackingState",
    "Vacation", "compile_script", "run", "valid_script_name",
]
