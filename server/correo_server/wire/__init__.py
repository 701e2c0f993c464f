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
extension points only, or servers of our own.  correo first kept aiosmtpd
at the public edge and served only the two internal LMTP hops with the lean
server of :mod:`.server`; measured, the relay on aiosmtpd still spent about
a fifth of its CPU per message on aiosmtpd's machinery (a stream reader and
a task per connection, a timer reset and a log call per command, method
tables built for every connection, a drain per reply).  Now no correo
server runs on aiosmtpd (it stays a test dependency, playing remote MXes):

* The **relay** (:mod:`correo_server.relay.connection` for the I/O,
  :mod:`correo_server.relay.smtp` for the commands) faces any client on the
  internet: STARTTLS, AUTH, HELP, garbage and half-closed connections.  It
  is one :class:`asyncio.Protocol` per connection; commands that only
  consult memory are answered at once and the replies to a pipelined group
  go out in one write; the commands that wait (SPF, DNSBL, a login, the
  message) run as a task while the rest of the input waits.
* The **two LMTP hops** carry every message twice more, from correo's own
  client on pooled connections.  The lean server (:mod:`.server`) answers
  pipelined commands in one write, cuts the message out of its buffer in
  one step and hands it to a handler that can batch the disk work of many
  messages.

Both parse with the same :mod:`.paths` and :mod:`.replies` as the client.
"""
