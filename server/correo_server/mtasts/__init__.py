"""MTA-STS (RFC 8461): SMTP MTA Strict Transport Security, both ways.

* :mod:`.policy` (pure): the policy file's grammar, the ``_mta-sts`` TXT
  record, MX patterns, the id of a published policy.  The autoconfig
  service serves a hosted domain's policy with it; the MailDomain status
  names its id in the TXT record to publish; the queue parses receivers'
  policies with it.
* :mod:`.decide` (pure): what a policy asks of one MX host (may it be used,
  must TLS be verified, is a failure only reported), and the delivery
  errors a failure turns into.
* :mod:`.fetch`, :mod:`.cache`, :mod:`.policies`: the queue's side, which
  finds a receiver's policy (TXT lookup through the queue's own resolver,
  HTTPS fetch, a cache on the spool volume that outlives restarts).

The queue's delivery code (``queue.outbound``) asks :class:`.policies.Policies`
for the policy of a domain and :func:`.decide.rule_for` for each MX host; it
imports this package, never the other way round.
"""
