"""Which hosted domain a queued message belongs to.

The owner decides the retry policy (:func:`.schedule.policy_for`), the
smarthost (:func:`.outbound.route_for`) and the domain under which
``/status`` counts the message (:mod:`.status`), so that an admin looking at
a domain's figures sees every message the queue holds for it.  It is chosen
once, when the message enters the queue (:mod:`.intake`), and recorded in
:attr:`.records.Envelope.domain`:

1. the sender's domain, when it is hosted;
2. else the domain of the first recipient in a hosted domain;
3. else the domain of the first hosted mailbox that forwarded the message to
   a remote address (a recipient's original address is hosted: a bounce
   forwarded by a mailbox, for instance);
4. else ``created_by``: the domain of the message a notice reports on, when
   the notice goes to a remote sender;
5. else the first configured domain: a message from ``<>`` to remote
   recipients only, whose origin the queue cannot tell, is still counted
   somewhere, so that ``/status`` never hides a queued message.

:func:`owner_of` answers for a spooled envelope whose recorded domain is no
longer hosted (spooled before the rules above, or the domain was removed
since): the owner is chosen again.  Pure: no I/O, no clock.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from ..config import Domain, ServerConfig
from .records import Envelope, Rcpt


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def owning_domain(cfg: ServerConfig, sender: str, recipients: Iterable[Rcpt],
                  created_by: str = "") -> Domain | None:
    """The hosted domain a message with this envelope belongs to (see the
    module docstring); None only when no domain is configured."""
    if sender:
        found = cfg.domain_for(domain_of(sender))
        if found is not None:
            return found
    recipients = tuple(recipients)
    for r in recipients:
        found = cfg.domain_for(domain_of(r.address))
        if found is not None:
            return found
    for r in recipients:
        found = cfg.domain_for(domain_of(r.original)) if r.original else None
        if found is not None:
            return found
    found = cfg.domain_for(created_by) if created_by else None
    if found is not None:
        return found
    return cfg.domains[0] if cfg.domains else None


def owner_of(cfg: ServerConfig, env: Envelope) -> Domain | None:
    """The hosted domain of a spooled message: the recorded one while it is
    hosted, else chosen again from the envelope."""
    found = cfg.domain_for(env.domain) if env.domain else None
    if found is not None:
        return found
    return owning_domain(cfg, env.sender, env.recipients)


def reowned(cfg: ServerConfig, env: Envelope) -> Envelope:
    """``env`` with :attr:`~.records.Envelope.domain` naming its owner as
    :func:`owner_of` says (the same object when nothing changes)."""
    owner = owner_of(cfg, env)
    name = owner.name if owner is not None else ""
    return env if name == env.domain else dataclasses.replace(env, domain=name)


__all__ = ["domain_of", "owning_domain", "owner_of", "reowned"]
