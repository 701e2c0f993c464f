"""What the relay runs for issue 11 beyond the defences, built once per relay.

* :class:`~.checks.RecipientChecks` -- forwards to broken mailboxes and
  quota, at RCPT and at the end of DATA;
* :class:`~correo_server.refusalreport.RefusalLog` -- every refusal counted
  by reason and domain (the relay's ``/status``: ``refused``), and its
  :class:`~correo_server.refusalreport.Reporter` to the queue.

``relay.smtp`` reaches these through ``RelayContext.backscatter`` (None in
tests that build a context without them).
"""
from __future__ import annotations

import time
from typing import Callable

from ..config import ServerConfig
from ..metrics import Registry
from ..refusalreport import METRIC, RefusalLog, Reporter, tallies_to_json
from .checks import RecipientChecks


class Backscatter:
    def __init__(self, checks: RecipientChecks, refusals: RefusalLog, reporter: Reporter | None = None) -> None:
        self.checks = checks
        self.refusals = refusals
        self.reporter = reporter

    @classmethod
    def from_config(cls, cfg: ServerConfig, *, clock: Callable[[], float] = time.time,
                    metrics: Registry | None = None) -> "Backscatter":
        if metrics is not None:
            metrics.counter(METRIC, "Mail refused by the defences and recipient checks, by reason (spf, dmarc, "
                            "own_domain, spam, virus, dnsbl, quota, srs, recipient, tempfail)")
        refusals = RefusalLog(cfg, clock=clock, metrics=metrics)
        return cls(RecipientChecks.from_config(cfg), refusals, Reporter.from_config(cfg, refusals))

    def start(self) -> None:
        self.checks.start()
        if self.reporter is not None:
            self.reporter.start()

    async def close(self) -> None:
        await self.checks.close()
        if self.reporter is not None:
            await self.reporter.close()

    def status(self) -> dict:
        """The ``refused`` entry of the relay's ``/status`` (since it started)."""
        return tallies_to_json(self.refusals.since_start)
