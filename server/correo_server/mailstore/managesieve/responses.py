"""What the ManageSieve server writes (RFC 5804 section 4): strings, OK/NO/BYE, capabilities.

Pure formatting.  A string goes out quoted when it is short, single-line
UTF-8 text, otherwise as a literal ``{n}`` CRLF and its octets; response
codes are atoms in parentheses, optionally with a string (``TAG``, ``SASL``).
"""
from __future__ import annotations


def string(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= 1024 and b"\r" not in data and b"\n" not in data and b"\x00" not in data:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def response(kind: str, text: str = "", code: str | None = None, code_arg: str | bytes | None = None) -> bytes:
    out = kind.encode("ascii")
    if code:
        out += b" (" + code.encode("ascii")
        if code_arg is not None:
            out += b" " + string(code_arg)
        out += b")"
    if text:
        out += b" " + string(text)
    return out + b"\r\n"


def ok(text: str = "", code: str | None = None, code_arg: str | bytes | None = None) -> bytes:
    return response("OK", text, code, code_arg)


def no(text: str, code: str | None = None) -> bytes:
    return response("NO", text, code)


def bye(text: str, code: str | None = None) -> bytes:
    return response("BYE", text, code)


def capabilities(items: list[tuple[str, str | None]]) -> bytes:
    return b"".join(string(name) + (b" " + string(value) if value is not None else b"") + b"\r\n"
                    for name, value in items)
