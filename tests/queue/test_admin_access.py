"""The queue's admin API (list, show, retry, delete) answers only on loopback;
status and metrics stay readable from the cluster."""
from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from correo_server.config import Listen
from correo_server.metrics import Registry
from correo_server.queue.admin import AdminSidePort


def request_from(peer: str, method: str, path: str):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request(method, path, transport=transport)


async def call(peer: str, method: str, path: str) -> int:
    port = AdminSidePort(Listen("127.0.0.1", 0), "queue", metrics=Registry(), status=lambda: {}, runner=mock.Mock())

    async def handler(_request):
        from aiohttp import web
        return web.Response(text="ok")
    response = await port._loopback_only(request_from(peer, method, path), handler)
    return response.status


async def test_admin_calls_from_another_pod_are_refused():
    assert await call("10.1.2.3", "DELETE", "/queue/ABC") == 403
    assert await call("10.1.2.3", "GET", "/queue") == 403


async def test_admin_calls_from_loopback_and_status_from_anywhere_are_served():
    assert await call("127.0.0.1", "DELETE", "/queue/ABC") == 200
    assert await call("::1", "GET", "/queue") == 200
    assert await call("10.1.2.3", "GET", "/status") == 200
    assert await call("10.1.2.3", "GET", "/metrics") == 200
