"""Receivers' MTA-STS policies cached on the spool volume.

RFC 8461 section 5.1: a policy stays in force for its ``max_age`` from the
time it was fetched, also when the TXT record disappears or the policy host
is unreachable (an attacker could arrange both).  So the cache must outlive a
restart of the queue: one JSON file per domain in ``<spool>/mta-sts/``::

    {"domain": "example.org", "id": "20260101", "fetchedAt": 1767225600.0,
     "policy": "version: STSv1\\r\\nmode: enforce\\r\\n..."}

written to a temporary file and renamed, so a crash leaves the old file or
the new one.  The policy text is kept as fetched and parsed again on load; a
file that no longer parses (or any other damage) counts as no cache entry.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .. import logs
from .decide import Applied
from .policy import PolicyError, parse

log = logs.get(__name__)

_SAFE = re.compile(r"[^a-z0-9.-]")


class PolicyCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, domain: str) -> Path:
        return self.root / (_SAFE.sub("_", domain.lower()) + ".json")

    def load(self, domain: str) -> Applied | None:
        try:
            doc = json.loads(self.path(domain).read_text(encoding="utf-8"))
            return Applied(domain=domain, policy=parse(doc["policy"]), id=str(doc["id"]),
                           fetched_at=float(doc["fetchedAt"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, PolicyError) as exc:
            log.warning("mta_sts_cache_unreadable", domain=domain, file=str(self.path(domain)), error=str(exc))
            return None

    def store(self, applied: Applied, text: str) -> None:
        """Keep a fetched policy; a failure to write is logged (the policy is still used)."""
        path = self.path(applied.domain)
        tmp = path.with_suffix(".tmp")
        doc = {"domain": applied.domain, "id": applied.id, "fetchedAt": applied.fetched_at, "policy": text}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("mta_sts_cache_not_written", domain=applied.domain, file=str(path), error=str(exc))
