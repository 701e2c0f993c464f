"""The HTTP side port every correo service has: ``/healthz``, ``/readyz``,
``/metrics`` (Prometheus text, :mod:`.metrics`) and ``/status`` (JSON).

The operator's status timer and ``correo status`` read ``/status``; kubelet
probes ``/healthz`` (liveness: the event loop answers) and ``/readyz``
(readiness: the service can do its job, e.g. the relay reaches the queue).
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Awaitable, Callable

from aiohttp import web

from .config import Listen
from .metrics import CONTENT_TYPE, Registry

StatusFn = Callable[[], "dict[str, Any] | Awaitable[dict[str, Any]]"]
ReadyFn = Callable[[], "bool | Awaitable[bool]"]


async def _call(fn):
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class SidePort:
    def __init__(self, listen: Listen, service: str, *, metrics: Registry,
                 status: StatusFn, ready: ReadyFn = lambda: True,
                 routes: tuple[tuple[str, str, Callable], ...] = (), reuse_port: bool = False) -> None:
        self.listen = listen
        self.reuse_port = reuse_port  # SO_REUSEPORT: a successor may bind the port while this one runs
        self.service = service
        self.routes = routes  # more (method, path, handler): a service's own endpoints
        self.metrics = metrics
        self._status = status
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status_handler)
        for method, path, handler in self.routes:
            app.router.add_route(method, path, handler)
        return app

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = bool(await _call(self._ready))
        return web.Response(text="ready\n" if ready else "not ready\n", status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render().encode("utf-8"),
                            headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})

    async def _status_handler(self, _request: web.Request) -> web.Response:
        doc = await _call(self._status)
        return web.Response(text=json.dumps(doc, sort_keys=True, default=str), content_type="application/json")

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen.host, self.listen.port, reuse_address=True,
                           reuse_port=self.reuse_port or None)
        await site.start()
        server = site._server  # the bound socket tells the real port when 0 was asked
        self.port = server.sockets[0].getsockname()[1] if server and server.sockets else self.listen.port
        return self.port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
