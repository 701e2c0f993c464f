"""The relay: correo's SMTP edge (DESIGN.md, "The path of one message", step 1).

Three listeners share one policy: ``smtp`` (inbound MX, mail for hosted
domains only), ``submission`` (STARTTLS, then AUTH) and ``smtps`` (the same as
submission over implicit TLS).  Each accepted message gets a ``Received:``
header, a DKIM signature when an authenticated user sends it from a hosted
domain, and is handed to the queue over LMTP *before* the client hears
``250``.  The relay keeps no state of its own.

On port 25 the defences of :mod:`correo_server.defences` run inside
:mod:`.smtp`, each where it can first decide: DNS blocklists from connect
(refused at RCPT), SPF at MAIL FROM, DKIM, DMARC, the own-domain rule and
rspamd at the end of DATA, before the hand-off.

Modules, from the bottom up (each imports only those above it, and the
wire layer, :mod:`correo_server.wire`: replies, paths, the LMTP client):

* :mod:`.policy`   -- who may send what to whom, rate limiting (pure, injected clock)
* :mod:`.data`     -- the DATA reader's state machine: limits, smuggling defence (pure)
* :mod:`.received` -- the ``Received:`` header (pure)
* :mod:`.dkim`     -- DKIM signing with keys from the configuration folder
* :mod:`.handoff`  -- the LMTP client that hands messages to the queue
* :mod:`.queuepool` -- several queue replicas used as one (any ready one takes each message)
* :mod:`.context`  -- what the listeners share, and the relay's metrics
* :mod:`.connection` -- one connection's I/O: command lines, replies, the message, STARTTLS
* :mod:`.smtp`     -- the SMTP commands: wiring the above to a connection
* :mod:`.service`  -- :class:`~.service.RelayService`, what ``correo serve relay`` runs
"""
