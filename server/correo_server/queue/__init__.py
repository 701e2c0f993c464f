"""The delivery queue: durable store-and-forward between the relay and the world.

How the modules fit together, from the bottom up:

- :mod:`.clock`      the time source (wall clock, or a fake one tests advance).
- :mod:`.records`    what the queue knows: envelopes, per-recipient state and
                     attempt history, cumulative figures, and the journal events
                     that change them (pure data, no I/O).
- :mod:`.schedule`   pure decisions: when to retry, when to warn, when to give up.
- :mod:`.spool`      the disk: message files written with fsync before they are
                     acknowledged, an append-only journal of state changes with
                     group commit, snapshots, recovery after a crash.
- :mod:`.dsn`        RFC 3464 delivery status notifications (delayed, failed).
- :mod:`.mx`         DNS: MX hosts in preference order, A/AAAA fallback, null MX.
- :mod:`.outbound`   routing (mailstore, MX, smarthost) and delivery of one
                     message to one destination over a reusable connection.
- :mod:`.intake`     what enters the queue: address expansion and the spool write.
- :mod:`.lmtp_in`    the LMTP listener the relay hands messages to.
- :mod:`.runner`     the scheduler loop and delivery workers.
- :mod:`.status`     the ``/status`` document and the Prometheus figures.
- :mod:`.admin`      the admin HTTP API and the ``correo queue`` command.
- :mod:`.handover`   a leaving replica (``queue.replicas``) handing its messages,
                     with their history, to the others (``XTRANSFER``).
- :mod:`.service`    ``QueueService``: builds all of the above from a config folder.
"""
