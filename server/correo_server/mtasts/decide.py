"""What a receiver's MTA-STS policy asks of a delivery; decisions as pure functions.

Two decisions, both without I/O:

* :func:`next_step`: given the cached policy, what the ``_mta-sts`` TXT record
  announces and the time, whether to use the cached policy, fetch a new one,
  or go on without (RFC 8461 sections 3.3 and 5.1);
* :func:`rule_for`: given the applied policy and one MX host, a
  :class:`HostRule`: may the host be used at all (its name matches the
  policy's ``mx`` patterns, section 4.1), and TLS with a certificate valid
  for that name is required (``enforce``) or only reported on (``testing``).

A requirement that is not met becomes a delivery error with a reason a person
can act on (:func:`failure_reply`): ``451 4.7.5 MTA-STS policy of example.org
(enforce, id ...) not met by mx1.example.org: ...``.  It is temporary: the
RFC forbids bouncing before the policy could have changed, and the queue's
retry schedule looks again.  :meth:`HostRule.unmet` logs it and, in
``enforce`` mode, returns the :class:`~correo_server.wire.client.Failure` the
delivery code raises; in ``testing`` mode the delivery goes on.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass

from .. import logs
from ..wire.client import Failure
from ..wire.replies import Reply, local_reply
from .policy import Policy

log = logs.get(__name__)


@dataclass(frozen=True)
class Applied:
    """A receiver's policy as the queue holds it: parsed, with its id and when it was fetched."""

    domain: str
    policy: Policy
    id: str
    fetched_at: float

    def fresh(self, now: float) -> bool:
        """Still within its max_age."""
        return now < self.fetched_at + self.policy.max_age


# next_step actions
USE_CACHED, FETCH, NO_POLICY = "cached", "fetch", "none"


def next_step(cached: Applied | None, announced: str | None, now: float) -> tuple[str, str]:
    """(action, why).  ``announced`` is the id in the TXT record, None when
    there is no usable record (none, malformed, or the lookup failed)."""
    fresh = cached is not None and cached.fresh(now)
    if announced is not None:
        if fresh and cached.id == announced:
            return USE_CACHED, "the cached policy is current"
        if cached is None:
            return FETCH, "no policy cached yet"
        return FETCH, (f"the TXT record announces policy {announced}, cached is {cached.id}"
                       if cached.id != announced else "the cached policy expired")
    if fresh:
        return USE_CACHED, "no usable TXT record; the cached policy has not expired (RFC 8461 section 3.3)"
    return NO_POLICY, "no usable TXT record and no cached policy"


def failure_reply(applied: Applied, host: str, problem: str, code: str = "4.7.5") -> Reply:
    mode = applied.policy.mode
    return local_reply(451, code, f"MTA-STS policy of {applied.domain} ({mode}, id {applied.id}) not met by "
                                  f"{host}: {problem}")


@dataclass(frozen=True)
class HostRule:
    """What the applied policy asks of one MX host."""

    applied: Applied
    host: str
    allowed: bool  # the host's name matches one of the policy's mx patterns
    context: ssl.SSLContext  # verifies the chain and the host's name

    @property
    def enforce(self) -> bool:
        return self.applied.policy.mode == "enforce"

    def refusal(self) -> Reply | None:
        """Why the host must not be used at all (enforce, not in the policy), else None."""
        if self.allowed or not self.enforce:
            return None
        return failure_reply(self.applied, self.host, "the host is not among the policy's MX patterns "
                                                      f"({', '.join(self.applied.policy.mx)})")

    def unmet(self, problem: str, code: str = "4.7.5") -> Failure | None:
        """A requirement the host did not meet: logged; in enforce mode the
        Failure to raise, in testing mode None (deliver anyway)."""
        reply = failure_reply(self.applied, self.host, problem, code)
        if self.enforce:
            log.warning("mta_sts_refused", domain=self.applied.domain, mx=self.host, mode="enforce",
                        policy_id=self.applied.id, problem=problem)
            return Failure(reply, "tls")
        log.warning("mta_sts_report", domain=self.applied.domain, mx=self.host, mode="testing",
                    policy_id=self.applied.id, problem=problem, action="delivering anyway (testing mode)")
        return None


def rule_for(applied: Applied | None, host: str, context: ssl.SSLContext) -> HostRule | None:
    """The rule for one MX host; None when no policy applies (none, or mode ``none``)."""
    if applied is None or applied.policy.mode == "none":
        return None
    return HostRule(applied, host.lower().rstrip("."), applied.policy.matches(host), context)
