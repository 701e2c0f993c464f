"""The DNS records a MailDomain's owner publishes, written as a zone file
(RFC 1035 section 5 master-file lines, as BIND, Knot and NSD read them and as
most DNS providers import them).

Pure: it formats the ``status.dnsRecords`` list that
:func:`correo_operator.status.dns_records` computes (the operator writes it
on the MailDomain; ``correo status --dns`` prints it with this module), one
section per zone (the domain and each alias domain), each record with its
purpose as a comment.  Names are absolute (ending in a dot) so a line means
the same wherever it is pasted.  TXT values are quoted and split into
character-strings of at most 255 octets (a DKIM key is longer than one
string may be; RFC 7208 section 3.3 and RFC 6376 section 3.6.2.2 say
receivers join them).
"""
from __future__ import annotations

from typing import Iterable, Mapping

DEFAULT_TTL = 3600
MAX_STRING = 255  # octets in one <character-string> (RFC 1035 section 3.3)


def quote_txt(value: str) -> str:
    """A TXT value as quoted character-strings of at most 255 octets each."""
    data = value.encode("utf-8")
    chunks = [data[i:i + MAX_STRING] for i in range(0, len(data), MAX_STRING)] or [b""]
    out = []
    for chunk in chunks:
        text = []
        for byte in chunk:
            ch = chr(byte)
            if ch in '"\\':
                text.append("\\" + ch)
            elif 0x20 <= byte < 0x7F:
                text.append(ch)
            else:  # RFC 1035 \DDD for what is not printable ASCII
                text.append(f"\\{byte:03d}")
        out.append('"' + "".join(text) + '"')
    return " ".join(out)


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The longest of ``zones`` that ``name`` lies in (names are absolute or not; case ignored)."""
    name = name.rstrip(".").lower()
    best = None
    for zone in zones:
        z = zone.rstrip(".").lower()
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def record_line(record: Mapping[str, str], ttl: int = DEFAULT_TTL) -> str:
    """One master-file line: ``name TTL IN TYPE value``."""
    kind = record["type"]
    value = quote_txt(record["value"]) if kind == "TXT" else record["value"]
    return f"{record['name']}\t{ttl}\tIN\t{kind}\t{value}"


def render(records: list[Mapping[str, str]], zones: list[str], *, ttl: int = DEFAULT_TTL,
           title: str = "") -> str:
    """Zone-file text for ``records``, a section per zone in ``zones`` order
    (a record in none of them goes last, under its own name)."""
    sections: dict[str, list[Mapping[str, str]]] = {z.rstrip(".").lower(): [] for z in zones}
    for record in records:
        zone = zone_of(record["name"], sections) or record["name"].rstrip(".").lower()
        sections.setdefault(zone, []).append(record)
    out = [f"; {title}"] if title else []
    for zone, recs in sections.items():
        if not recs:
            continue
        out.append(f"; zone {zone}.")
        purpose = None
        for record in recs:
            if record.get("purpose") != purpose:
                purpose = record.get("purpose")
                out.append(f"; {purpose}")
            out.append(record_line(record, ttl))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
