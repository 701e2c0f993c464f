"""Which mailbox a recipient address reaches: one pure function for every hop.

The relay (``RCPT TO`` on port 25), the queue (routing at enqueue) and the
mailstore (LMTP ``RCPT`` and final delivery) all ask the same question through
:class:`~correo_server.directory.Directory`, which calls :func:`resolve` with
its index and the domain's settings (:class:`~correo_server.config.Domain`:
``recipientDelimiter`` and ``catchAll``).  So an address the relay accepts is
one the queue routes and the mailstore stores, and a change of the rules is
made here once.

The order, as Postfix's virtual maps and Dovecot resolve it:

1. the address itself: a mailbox or one of its aliases (``via="address"``);
2. with a subaddress (RFC 5233): ``ana+news@example.com`` → ``ana@`` (or
   an alias ``ana@``), detail ``news`` (``via="detail"``).  Each character of
   the domain's delimiter separates (``+-``: both ``ana+x`` and ``ana-x``);
   the first one in the local part splits (``a+b+c`` → ``a``, ``b+c``);
3. the domain's catch-all mailbox, when it has one (``via="catch-all"``);
   only for delivery: logins and "may send as" never use it
   (``catch_all=False``).

:attr:`Resolved.address` is the address to deliver to: the mailbox's own
address for 1; the mailbox's address with the detail kept for 2
(``ana+news@example.com``, so that the mailstore can file it into ``news``
and Sieve's ``envelope :detail`` sees it); the address as given (in the
canonical domain) for 3, so that the catch-all mailbox's rules can tell
which address was used.  The mailstore resolves that address again and
reaches the same mailbox.

Nothing here does I/O; it imports nothing of correo.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

DEFAULT_DELIMITER = "+"
VIA_ADDRESS, VIA_DETAIL, VIA_CATCH_ALL = "address", "detail", "catch-all"


class DomainRules(Protocol):
    """What resolution reads of a hosted domain (``config.Domain`` has it)."""

    name: str
    recipient_delimiter: str
    catch_all: str | None


class _Entry(Protocol):
    address: str


E = TypeVar("E", bound=_Entry)


@dataclass(frozen=True)
class Resolved(Generic[E]):
    entry: E  # the mailbox the address reaches
    address: str  # where to deliver (see the module docstring)
    detail: str | None = None  # the subaddress, "" for ``ana+@``
    via: str = VIA_ADDRESS


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain lower-cased, without a trailing dot); "" domain when there is no @."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        return address.strip().strip("<>"), ""
    return local, domain.lower().rstrip(".")


def split_detail(local: str, delimiter: str) -> tuple[str, str | None]:
    """(user, detail) of a local part; detail None when no delimiter character
    is in it.  ``delimiter`` may hold several characters, each a separator; the
    first one found splits.  An empty user (``+x@``) is not a subaddress."""
    if not delimiter:
        return local, None
    at = min((i for i in (local.find(d) for d in delimiter) if i > 0), default=-1)
    if at < 0:
        return local, None
    return local[:at], local[at + 1:]


def resolve(address: str, find: Callable[[str], E | None], domain: DomainRules | None, *,
            catch_all: bool = True) -> Resolved[E] | None:
    """The mailbox ``address`` reaches, or None.

    ``find`` looks up a lower-case ``local@domain`` key among mailboxes and
    aliases; ``domain`` is the hosted domain the address's domain belongs to
    (None: not hosted, or no settings known: ``+`` delimiter, no catch-all).
    """
    local, name = split_address(address)
    canonical = domain.name if domain is not None else name
    key = f"{local}@{canonical}".lower() if canonical else local.lower()
    entry = find(key)
    if entry is not None:
        return Resolved(entry, entry.address)
    delimiter = domain.recipient_delimiter if domain is not None else DEFAULT_DELIMITER
    user, detail = split_detail(local, delimiter)
    if detail is not None and canonical:
        entry = find(f"{user}@{canonical}".lower())
        if entry is not None:
            separator = local[len(user)]
            own_local, _, own_domain = entry.address.rpartition("@")
            return Resolved(entry, f"{own_local}{separator}{detail}@{own_domain}", detail, VIA_DETAIL)
    if catch_all and domain is not None and domain.catch_all and canonical:
        entry = find(domain.catch_all.lower())
        if entry is not None:
            return Resolved(entry, f"{local}@{canonical}", detail, VIA_CATCH_ALL)
    return None
