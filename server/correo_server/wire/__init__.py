"""correo's one SMTP wire layer, shared by the relay, the queue and the mailstore.

Modules, from the bottom up (each imports only those above it; nothing here
knows about relays, queues or mailboxes):

* :mod:`.replies` -- the one reply type (code, enhanced status, text; 2xx is
  success), the RFC 3463 status-code parser, reply-line parsing (pure)
* :mod:`.paths`   -- ``MAIL FROM``/``RCPT TO`` paths and ESMTP parameters (pure)
* :mod:`.data`    -- the DATA section: end of data, dot (un)stuffing (pure)
* :mod:`.client`  -- the one SMTP/LMTP client: pipelining, per-recipient
  LMTP replies, STARTTLS, AUTH (the relay's hand-off, the queue's deliveries)
* :mod:`.server`  -- the lean LMTP server of the two internal hops
  (relay → queue, queue → mailstore)

Why the servers have this shape (issue 12)
------------------------------------------

There were two honest choices: aiosmtpd everywhere through its public
extension points only, or aiosmtpd at the public edge and a lean server of
our own for the internal hops.  correo takes the second:

* The **relay** faces any client on the internet: STARTTLS, AUTH, HELP,
  garbage and half-closed connections.  There a maintained, widely used
  server is worth its cost, and the relay uses aiosmtpd the documented way
  (``smtp_<VERB>`` methods, handler hooks, ``push``, ``challenge_auth``,
  ``_create_session``; see :mod:`correo_server.relay.smtp`), with the
  version range pinned in ``pyproject.toml``.  It imports no private name.
* The **two LMTP hops** carry every message twice more, from correo's own
  client on pooled connections.  aiosmtpd costs there what has nothing to do
  with mail: building its method tables for each connection
  (``inspect.getmembers``, about 0.13 ms), a stream reader and a task per
  connection, a timer per command, a read per line of every message.  The
  lean server (:mod:`.server`) is an :class:`asyncio.Protocol` that answers
  pipelined commands in one write, cuts the message out of its buffer in one
  step and hands it to a handler that can batch the disk work of many
  messages; it parses with the same :mod:`.paths` and :mod:`.replies` as the
  relay and the client.
"""
