"""Message builders for the IMAP extension tests (a module name unique in
the repository)."""
from __future__ import annotations


def mail(subject: str | None = "hello", *, sender: str = "Jones <jones@example.org>",
         to: str = "alice@example.com", cc: str | None = None, date: str | None = "Tue, 14 May 2024 10:00:00 +0000",
         msgid: str | None = None, refs: str | None = None, reply_to_id: str | None = None,
         body: str = "Body\r\n", extra: str = "") -> bytes:
    head = [f"From: {sender}", f"To: {to}"]
    if cc is not None:
        head.append(f"Cc: {cc}")
    if subject is not None:
        head.append(f"Subject: {subject}")
    if date is not None:
        head.append(f"Date: {date}")
    if msgid is not None:
        head.append(f"Message-ID: <{msgid}>")
    if refs is not None:
        head.append("References: " + " ".join(f"<{r}>" for r in refs.split()))
    if reply_to_id is not None:
        head.append(f"In-Reply-To: <{reply_to_id}>")
    return ("\r\n".join(head) + "\r\n" + extra + "\r\n" + body).encode("utf-8")


def at(minute: int, hour: int = 10, day: int = 14) -> str:
    return f"Tue, {day} May 2024 {hour:02d}:{minute:02d}:00 +0000"


def ok(raw, command: str) -> list[bytes]:
    """The untagged lines of a command that must succeed."""
    lines = raw.cmd(command)
    assert lines[-1].startswith(b"t%d OK " % raw.n), lines
    return lines[:-1]


def send_with_literals(raw, tag: bytes, parts: list[bytes]) -> list[bytes]:
    """Send a command whose parts are joined by synchronizing literals
    (``parts[0] {n}``, then the literal, then ``parts[1]``...): every
    literal waits for the server's ``+``.  Each odd part is a literal."""
    raw.send(tag + b" " + parts[0])
    for i in range(1, len(parts), 2):
        literal, rest = parts[i], parts[i + 1] if i + 1 < len(parts) else b""
        line = raw.readline()
        if not line.startswith(b"+"):
            return [line]
        raw.send(literal + rest)
    raw.send(b"\r\n")
    return raw.read_response(tag)
