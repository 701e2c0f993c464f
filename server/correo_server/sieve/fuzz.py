"""A fuzzing entry point for the Sieve compiler and interpreter (atheris-ready).

``fuzz_one_input(data)`` compiles ``data`` as a script and, when it compiles,
runs it on a fixed message with tight limits.  The only exception allowed out
of the compiler is :class:`~.errors.SieveError`, and the interpreter must
never raise: anything else is a bug the fuzzer reports.  Run with atheris
(``pip install atheris``; the driver lives with the other harnesses, so
that the server never imports a test tool)::

    python tests/fuzz/run.py sieve [corpus folder...]

The tests run the same function over the differential corpus and over
hypothesis-generated scripts.
"""
from __future__ import annotations

import sys

from .compiler import compile_script
from .context import Context, Envelope, Limits
from .errors import SieveError
from .interpreter import run

MESSAGE = (b"Received: from a.example by b.example; Tue, 1 Apr 1997 09:06:31 -0800\r\n"
           b"From: \"Wile E. Coyote\" <coyote@desert.example.org>\r\n"
           b"To: roadrunner@acme.example.com, group: a@b.example, c@d.example;\r\n"
           b"Subject: =?utf-8?q?I_have_a_present_for_you?=\r\n"
           b"Date: Tue, 1 Apr 1997 09:06:31 -0800\r\nMessage-ID: <1@desert.example.org>\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nbirdseed\r\n--b\r\n"
           b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--b--\r\n")
ENVELOPE = Envelope("coyote@desert.example.org", "roadrunner+fuzz@acme.example.com")
CONTEXT = Context(mailbox="roadrunner@acme.example.com", now=860000000.0,
                  limits=Limits(cpu_seconds=1.0), folder_exists=lambda name: name == "INBOX")


def fuzz_one_input(data: bytes) -> None:
    try:
        script = compile_script(data, "fuzz", max_size=64 * 1024)
    except SieveError:
        return
    result = run(script, MESSAGE, ENVELOPE, CONTEXT)
    assert result.actions, "a run always decides something (at least the implicit keep)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("the atheris driver is tests/fuzz/run.py: python tests/fuzz/run.py sieve [options] [corpus]")
