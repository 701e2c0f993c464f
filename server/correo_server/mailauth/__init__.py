"""Sender authentication for inbound mail: SPF, DKIM, DMARC, and the rule
that protects our own domains (DESIGN.md, "Where the second wave's parts go").

The relay runs these on port 25 only, through :mod:`correo_server.defences`.
Modules, from the bottom up (each imports only those above it):

* :mod:`.dnsanswers`  -- DNS answers as data; the per-connection view (the only DNS I/O)
* :mod:`.dnscache`    -- the process-wide DNS answer cache (TTL, RFC 2308 negative caching, bounded)
* :mod:`.headers`     -- the header section as raw fields: read, remove, fold (pure)
* :mod:`.spf`         -- RFC 7208 with pyspf, over DNS answers
* :mod:`.dkimverify`  -- RFC 6376 verification of every signature with dkimpy
* :mod:`.dmarc`       -- RFC 7489 policy discovery, alignment, p/sp/pct (Public Suffix List)
* :mod:`.owndomain`   -- unauthenticated mail claiming a hosted domain must prove itself
* :mod:`.authresults` -- one RFC 8601 ``Authentication-Results:``; forged claims removed
* :mod:`.session`     -- the checks for one connection: at MAIL FROM, at the end of DATA

Every check returns its verdict and the SMTP reply it implies
(:class:`correo_server.wire.replies.Reply`, the one reply type) as data; DNS failures are
``temperror`` verdicts and ``4xx`` replies, never a pass.
"""
