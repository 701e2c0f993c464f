"""Mail rules at final delivery: Sieve scripts, the auto-reply, subaddress folders.

The mailstore's LMTP (:mod:`..lmtp`) hands a recipient to
:class:`.delivery.DeliveryRules` when its mailbox has rules, after aliases,
forwards and the catch-all were resolved (:mod:`correo_server.addressing`).
The modules, bottom up:

- :mod:`.chain` — pure: the administrator's script, the user's active
  script, then the auto-reply, over the engine (:mod:`correo_server.sieve`);
- :mod:`.scripts` — which scripts a mailbox runs, compiled once per text;
- :mod:`.verdict` — the relay's spam scan for ``spamtest``/``virustest``;
- :mod:`.submit` — replies, redirects and reject notices to the queue (LMTP);
- :mod:`.report` — errors per mailbox, the ``rules`` entry of ``/status``,
  the metric families;
- :mod:`.clock` — the time rules read (a test seam across processes);
- :mod:`.delivery` — one delivery: decide, send, store, reply, record.
"""
