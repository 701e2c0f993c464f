"""The move endpoints of a mailstore shard, on their own listener
(``mailstore.moves``; TLS with the stack's own key pair when it has one,
as the proxy's logins to the shards): what the
orchestrator (``correo_operator.moverun``, run by the operator on
Kubernetes and by ``correo up`` locally) calls to move a mailbox between
shards.  The file work is :mod:`.transfer`; this module is the HTTP, the
authentication and the live side (sessions ended, the store told).

Every request carries ``Authorization: Bearer <secret>``, the proxy
credential's secret (``mailstore.proxySecretFile``: only the proxy and the
control plane have it); without a credential the endpoints answer 404.

==========================================  ==========================================
``GET  /internal/moves``                    fences and verified copies on this shard
``POST /internal/moves/fence?mailbox=&to=``  stop deliveries (``451 4.2.0``) and logins,
                                            end its sessions, close its indexes
``GET  /internal/moves/export?mailbox=&fence=``  the tar stream (only while fenced)
``POST /internal/moves/import?mailbox=&from=&fence=``  body: that stream; unpacked,
                                            verified, put in place (409: this shard owns it)
``GET  /internal/moves/check?mailbox=``     could this shard take it (nothing of it here
                                            that no move put here)?
``POST /internal/moves/unfence?mailbox=``   a move called off before the flip
``POST /internal/moves/remove?mailbox=``    drop a copy this shard does not own (409 if it does)
``POST /internal/moves/settle?mailbox=``    forget the import marker (the old copy is gone)
==========================================  ==========================================

Ownership is always the directory's (``MailboxEntry.shard``): a shard
never removes, nor overwrites by import, a mailbox the directory gives it.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import queue
import threading
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .. import faults, logs
from . import transfer

if TYPE_CHECKING:
    from .service import MailstoreService

log = logs.get(__name__)

PREFIX = "/internal/moves"
MOVING_TEXT = "This mailbox is being moved to another server; reconnect in a moment."


class _Pipe(io.RawIOBase):
    """Bytes from a worker thread to the event loop (export), bounded."""

    def __init__(self, depth: int = 16) -> None:
        self.q: queue.Queue = queue.Queue(depth)
        self.closed_by_reader = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.closed_by_reader.is_set():
            raise BrokenPipeError("the reader went away")
        chunk = bytes(data)
        while True:
            try:
                self.q.put(chunk, timeout=1)
                return len(chunk)
            except queue.Full:
                if self.closed_by_reader.is_set():
                    raise BrokenPipeError("the reader went away") from None


class _Feed(io.RawIOBase):
    """Bytes from the event loop to a worker thread (import)."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue(16)
        self.buf = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.buf and not self.eof:
            item = self.q.get()
            if item is None:
                self.eof = True
            else:
                self.buf = item
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


class MoveEndpoints:
    def __init__(self, service: "MailstoreService") -> None:
        self.service = service

    @property
    def ctx(self):
        assert self.service.ctx is not None
        return self.service.ctx

    async def serve(self, listen, tls) -> tuple[web.AppRunner, int]:
        """Listen on ``listen`` (``mailstore.moves``) for the move endpoints,
        over TLS with the stack's own pair when it has one (``tls``: the
        service's :class:`~correo_server.tlsfiles.ServerTLS`, which follows
        its files): the credential and the mail never cross the network in
        the clear.  Returns the runner and the bound port."""
        app = web.Application(client_max_size=1024 ** 2)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True,
                           ssl_context=tls.context if tls is not None else None)
        await site.start()
        server = site._server
        port = server.sockets[0].getsockname()[1] if server and server.sockets else listen.port
        log.info("moves_listening", port=port, tls=tls is not None)
        return runner, port

    def routes(self) -> tuple[tuple[str, str, Any], ...]:
        return (("GET", PREFIX, self.list), ("POST", PREFIX + "/fence", self.fence),
                ("GET", PREFIX + "/export", self.export), ("POST", PREFIX + "/import", self.import_),
                ("POST", PREFIX + "/unfence", self.unfence), ("POST", PREFIX + "/remove", self.remove),
                ("POST", PREFIX + "/settle", self.settle), ("GET", PREFIX + "/check", self.check))

    # -- helpers -----------------------------------------------------------------
    def _check(self, request: web.Request) -> str | None:
        """The mailbox the request names; raises the HTTP error otherwise."""
        cred = self.ctx.proxy
        if cred is None:
            raise web.HTTPNotFound(text="no move endpoints: this mailstore has no proxy credential\n")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {cred.secret}".encode()):
            raise web.HTTPUnauthorized(text="the move endpoints need the proxy credential\n")
        mailbox = request.query.get("mailbox")
        if mailbox is not None:
            mailbox = mailbox.strip().lower()
            if "@" not in mailbox:
                raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        return mailbox

    def _owner(self, address: str) -> int | None:
        entry = self.ctx.directory.get().lookup(address)
        return entry.shard_id if entry is not None else None

    @property
    def _shard(self) -> int | None:
        return self.ctx.config.mailstore.shard

    @property
    def _data(self):
        return self.service.data_dir

    def _io(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- endpoints ---------------------------------------------------------------
    async def list(self, request: web.Request) -> web.Response:
        self._check(request)
        fenced, imported = await self._io(lambda: (transfer.markers(self._data, transfer.OUT_MARKER),
                                                   transfer.markers(self._data, transfer.IN_MARKER)))
        return web.json_response({"shard": self._shard, "fenced": fenced, "imported": imported})

    async def check(self, request: web.Request) -> web.Response:
        """Could this shard take ``mailbox`` by import?  Asked before the
        source is fenced, so that a move that cannot finish never holds a
        mailbox unavailable."""
        address = self._check(request)
        if address is None:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        if self._owner(address) == self._shard:
            return web.json_response({"ok": False, "reason": f"shard {self._shard} owns {address} already"})
        refusal = await self._io(transfer.held_elsewhere, self._data, address)
        return web.json_response({"ok": refusal is None, **({"reason": refusal} if refusal else {})})

    async def fence(self, request: web.Request) -> web.Response:
        address = self._check(request)
        try:
            to = int(request.query["to"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="to=SHARD\n") from None
        if address is None:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        if self._owner(address) != self._shard:  # only the owner is fenced (its directory may lag: try again)
            raise web.HTTPConflict(text=f"{address} is not this shard's (shard {self._owner(address)} owns it)\n")
        store = self.ctx.store
        doc = await self._io(transfer.fence, self._data, address, to)
        store.fenced[address] = doc  # from here on nothing is written (the store checks under the lock)
        faults.point("mailstore.move.fenced")
        ended = self.end_sessions(address)
        await store.release(address)  # the write in progress finishes; every index is closed
        log.info("mailbox_fenced", mailbox=address, to=to, fence=doc["fence"], sessions_ended=ended)
        return web.json_response(doc)

    async def export(self, request: web.Request) -> web.StreamResponse:
        address = self._check(request)
        fence_id = request.query.get("fence", "")
        if address is None or address not in self.ctx.store.fenced \
                or self.ctx.store.fenced[address].get("fence") != fence_id:
            raise web.HTTPConflict(text=f"{address} is not fenced with {fence_id!r} here\n")
        await self.ctx.store.release(address)
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)
        pipe = _Pipe()
        loop = asyncio.get_running_loop()

        def work():
            try:
                return transfer.export(self._data, address, pipe, fence_id=fence_id)
            finally:
                pipe.q.put(None)

        job = loop.run_in_executor(None, work)
        try:
            while True:
                chunk = await loop.run_in_executor(None, pipe.q.get)
                if chunk is None:
                    break
                await response.write(chunk)
                faults.point("mailstore.move.exporting")
        except BaseException:
            pipe.closed_by_reader.set()
            while not job.done():  # unblock the writer
                try:
                    pipe.q.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.01)
            raise
        manifest = await job
        await response.write_eof()
        log.info("mailbox_exported", mailbox=address, files=len(manifest["files"]),
                 messages=manifest["summary"]["messages"], digest=manifest["digest"])
        return response

    async def import_(self, request: web.Request) -> web.Response:
        address = self._check(request)
        try:
            source = int(request.query["from"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="from=SHARD\n") from None
        fence_id = request.query.get("fence", "")
        if address is None or not fence_id:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS&fence=ID\n")
        if self._owner(address) == self._shard:
            raise web.HTTPConflict(text=f"{address} is this shard's own: an import would overwrite it\n")
        feed = _Feed()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, lambda: transfer.import_stream(self._data, address, feed,
                                                                       source=source, fence_id=fence_id))
        try:
            await self._feed(request, feed, job)
        except (aiohttp.ClientPayloadError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("mailbox_import_cut_off", mailbox=address, source=source, error=str(exc)[:300])
        finally:
            while not job.done():  # end of stream (a cut-off one fails the checks)
                try:
                    feed.q.put_nowait(None)
                    break
                except queue.Full:
                    await asyncio.sleep(0.005)
        try:
            done = await job
        except transfer.TransferError as exc:
            log.error("mailbox_import_failed", mailbox=address, source=source, error=str(exc))
            return web.json_response({"error": str(exc)}, status=422)
        self.ctx.store.fenced.pop(address, None)  # an old fence of ours went with the stale copy it replaced
        faults.point("mailstore.move.imported")
        log.info("mailbox_imported", mailbox=address, source=source, files=done.files, bytes=done.bytes,
                 messages=done.summary["messages"], digest=done.digest)
        return web.json_response({"address": done.address, "digest": done.digest, "summary": done.summary})

    @staticmethod
    async def _feed(request: web.Request, feed: _Feed, job: asyncio.Future) -> None:
        async for chunk in request.content.iter_chunked(transfer.CHUNK):
            while True:
                try:
                    feed.q.put_nowait(chunk)
                    break
                except queue.Full:
                    if job.done():  # the import gave up (a bad member): stop reading
                        return
                    await asyncio.sleep(0.005)
            if job.done():
                return

    async def unfence(self, request: web.Request) -> web.Response:
        address = self._check(request)
        if address is None:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        if self._owner(address) != self._shard:
            raise web.HTTPConflict(text=f"{address} is not this shard's: it stays fenced here\n")
        done = await self._io(transfer.unfence, self._data, address)
        self.ctx.store.fenced.pop(address, None)
        log.info("mailbox_unfenced", mailbox=address, was_fenced=done)
        return web.json_response({"unfenced": done})

    async def remove(self, request: web.Request) -> web.Response:
        address = self._check(request)
        if address is None:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        if self._owner(address) == self._shard:
            raise web.HTTPConflict(text=f"{address} is this shard's own: not removed\n")
        self.ctx.store.fenced.setdefault(address, {"address": address})  # never reopened meanwhile
        self.end_sessions(address)
        await self.ctx.store.release(address)
        done = await self._io(transfer.remove, self._data, address)
        self.ctx.store.fenced.pop(address, None)
        log.info("mailbox_copy_removed", mailbox=address, removed=done)
        return web.json_response({"removed": done})

    async def settle(self, request: web.Request) -> web.Response:
        address = self._check(request)
        if address is None:
            raise web.HTTPBadRequest(text="mailbox=ADDRESS\n")
        done = await self._io(transfer.settle, self._data, address)
        return web.json_response({"settled": done})

    # -- sessions ------------------------------------------------------------------
    def end_sessions(self, address: str) -> int:
        """End the IMAP, POP3 and ManageSieve sessions of ``address``; POP3
        without its UPDATE state (nothing marked deleted is removed)."""
        from .managesieve import responses as sieve_responses
        from .managesieve import server as sieveserver
        from .pop3 import server as pop3server
        ended = 0
        for name, server in self.service._servers.items():
            if name in ("imap", "imaps"):
                for conn, session in list(getattr(server, "correo_connections", ())):
                    state_address = getattr(getattr(session, "state", None), "address", None)
                    if state_address and state_address.lower() == address and conn.task is not None \
                            and not conn.expired:
                        conn.expired = MOVING_TEXT
                        conn.task.cancel()
                        ended += 1
            elif name in ("pop3", "pop3s", "managesieve"):
                table = pop3server._connections if name != "managesieve" else sieveserver._connections
                for conn in list(table.get(server, ())):
                    if (conn.session.mailbox or "").lower() != address:
                        continue
                    try:
                        conn.writer.write(b"-ERR [SYS/TEMP] " + MOVING_TEXT.encode() + b"\r\n" if name != "managesieve"
                                          else sieve_responses.bye(MOVING_TEXT, "TRYLATER"))
                    except (ConnectionError, RuntimeError):
                        pass
                    conn.writer.close()
                    ended += 1
        return ended
