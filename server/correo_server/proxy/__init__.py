"""``correo serve proxy``: IMAP, POP3 and ManageSieve in front of the
mailstore shards (``spec.mailstore.shards`` > 1).

A client talks to the proxy as to a mailstore until it has logged in: the
proxy greets, answers CAPABILITY, does STARTTLS (and implicit TLS on IMAPS
and POP3S), and checks the login against the directory with
:func:`correo_server.login.check_login` (the same password hashes, failed-
login delays, login cache and plaintext rule as the mailstore).  Then it
connects to the shard that owns the mailbox (:mod:`correo_server.shards`,
the shard the directory records), logs in there with the proxy credential
(:mod:`correo_server.proxyauth`: SASL PLAIN, the user as authorization
identity; the user's password is never sent again), hands the client the
shard's tagged reply and from then on relays bytes both ways
(:mod:`.relay`): IDLE and long sessions pass through untouched.  A shard
that cannot be reached gives ``NO [UNAVAILABLE]`` (IMAP), ``-ERR [SYS/TEMP]``
(POP3) or ``NO (TRYLATER)`` (ManageSieve) to its users only.

Modules: :mod:`.context` (what the listeners share), :mod:`.lines` (reading
pre-login commands with their limits), :mod:`.imap`, :mod:`.pop3`,
:mod:`.sieve` (the pre-login dialogues), :mod:`.relay` (the shard
connection and the byte relay), :mod:`.service` (listeners and side port).
"""
