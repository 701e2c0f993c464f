"""No backscatter: decide at SMTP time what can be decided there, and never
send a notice to a sender who failed SPF or DMARC.

A server that accepts mail it then cannot deliver sends a failure notice to
the envelope sender, which on port 25 is often forged: the notice lands on
an innocent party ("backscatter"), and that gets a server blocklisted.
correo answers at the protocol level instead, so that the sending server
(not us) tells its own user:

* :mod:`.recipients` -- an address that forwards to a suspended or unknown
  mailbox of ours is refused at RCPT (pure, over the directory);
* :mod:`.quota` -- a recipient whose mailbox is full gets ``452 4.2.2`` at
  RCPT, a message larger than the room left ``552 5.2.2`` (at RCPT when
  SIZE announced it, else at the end of DATA); the relay knows the room
  from the mailbox usage the mailstore publishes (its ``/quota``), polled
  every few seconds;
* :mod:`.verdict` -- what the relay accepts although its sender failed SPF
  or DMARC carries that verdict into the queue (an LMTP ``MAIL``
  parameter), and the queue then sends that sender no notice at all: it
  drops, logs and counts it;
* :mod:`.checks` -- the relay's entry points (:class:`.checks.RecipientChecks`).

The mailstore still enforces quotas at delivery (the relay's view can be a
few seconds old); what slips through that window bounces as before.
"""
