"""Content and reputation checks for inbound mail on port 25.

* :mod:`.dnsbl`  -- DNS blocklists and allowlists for the client address
  (asked at connect, refused at RCPT)
* :mod:`.rspamd` -- spam and malware scanning through rspamd's ``/checkv2``
  (end of DATA)

Both return verdicts with the SMTP reply they imply
(:class:`correo_server.wire.replies.Reply`, the one reply type); the relay calls them through
:mod:`correo_server.defences`.
"""
