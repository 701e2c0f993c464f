"""The relay's recipient checks against backscatter: what ``relay.smtp``
calls at RCPT and at the end of DATA, on every listener (a submission
client too is better told at once than by a bounce).

Built from ``correo.yaml`` (:meth:`RecipientChecks.from_config`): the quota
view polls ``relay.mailstoreHttp`` when it is set (:mod:`.quota`), or, when
the mailstore has shards (``mailstore.shards``), each shard's side port
(each lists only the mailboxes it holds: :class:`.quota.QuotaViews`); the
forward check (:mod:`.recipients`) needs only the directory.
"""
from __future__ import annotations

from ..config import ServerConfig
from ..directory import Directory
from ..wire.replies import Reply
from . import quota, recipients


def _host(host: str) -> str:
    """A host to connect to for one that may be a wildcard bind address, bracketed when IPv6."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"[{host}]" if ":" in host else host


class RecipientChecks:
    def __init__(self, config: ServerConfig, view: quota.QuotaView | quota.QuotaViews | None = None) -> None:
        self.config = config
        self.view = view

    @classmethod
    def from_config(cls, config: ServerConfig) -> "RecipientChecks":
        listen = config.relay.mailstore_http
        if listen is None:
            return cls(config, None)
        below = config.relay.max_message_bytes + quota.HEADER_ALLOWANCE
        shards = config.mailstore.shards
        if shards:
            return cls(config, quota.QuotaViews([quota.QuotaView(f"http://{_host(s.host)}:{s.http}", below)
                                                 for s in shards]))
        return cls(config, quota.QuotaView(f"http://{_host(listen.host)}:{listen.port}", below))

    def start(self) -> None:
        if self.view is not None:
            self.view.start()

    async def close(self) -> None:
        if self.view is not None:
            await self.view.close()

    def _room_for(self, address: str) -> int | None:
        return self.view.room_for(address) if self.view is not None else None

    def at_rcpt(self, directory: Directory, address: str, declared_size: int | None) -> tuple[Reply, str] | None:
        """(refusal, what to log) for a recipient of ours; None to accept it."""
        if not self.config.is_hosted(address.rpartition("@")[2]):
            return None
        broken = recipients.forward_refusal(directory, address, self.config.is_hosted)
        if broken is not None:
            return broken
        reply = quota.rcpt_reply(address, recipients.reached(directory, address), self._room_for, declared_size,
                                 self.config.mailstore.over_quota)
        return (reply, address) if reply is not None else None

    def at_data(self, directory: Directory, addresses: list[str], size: int) -> Reply | None:
        if self.view is None:
            return None
        hosted = [a for a in addresses if self.config.is_hosted(a.rpartition("@")[2])]
        return quota.data_reply(((a, recipients.reached(directory, a)) for a in hosted), self._room_for, size,
                                self.config.mailstore.over_quota)
