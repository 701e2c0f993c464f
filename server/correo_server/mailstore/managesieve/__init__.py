"""ManageSieve (RFC 5804) for the mailstore: users upload, check, activate and remove their Sieve scripts.

``parser`` reads commands (quoted strings and literals), ``responses``
writes strings and OK/NO/BYE, ``states`` is the non-authenticated /
authenticated state machine, ``storage`` keeps each mailbox's scripts on the
data folder (atomic writes, fsync; the active script marked), ``backend``
connects the states to logins, the Sieve compiler and the storage, and
``server`` is the socket loop: ``serve_managesieve(ctx, listen)``.

Logins follow IMAP's rules (:mod:`correo_server.login`,
:mod:`correo_server.guard`): SASL PLAIN only over TLS or from loopback, the
growing delay after failures, suspended mailboxes refused.
"""
