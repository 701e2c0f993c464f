"""``correo serve autoconfig``: client autoconfiguration and the MTA-STS policy over HTTP.

Two listeners, like every correo service:

* ``autoconfig.listen`` (container port 2080, Service port 80): the public
  documents only, meant to sit behind an Ingress that terminates TLS for
  ``autoconfig.<domain>``, ``autodiscover.<domain>`` and ``mta-sts.<domain>``:

  ====================================================  =====================================
  ``GET /.well-known/autoconfig/mail/config-v1.1.xml``  Thunderbird autoconfig (also
  ``GET /mail/config-v1.1.xml``                         ``?emailaddress=``)
  ``POST /autodiscover/autodiscover.xml``               Microsoft Autodiscover (POX; any case)
  ``GET /mail.mobileconfig?emailaddress=``              Apple configuration profile (unsigned)
  ``GET /.well-known/mta-sts.txt``                      the MTA-STS policy, on ``mta-sts.<domain>``
  ====================================================  =====================================

* ``autoconfig.http``: the side port (``/healthz``, ``/readyz``, ``/metrics``,
  ``/status``), never exposed by the Ingress.

Why its own small service rather than the relay's side port: it is the only
correo port meant for the Internet over HTTP(S), so an Ingress can expose it
whole without exposing ``/status`` and ``/metrics``; it holds no secret
(no directory, no keys: it reads only ``correo.yaml``), runs read-only with
no egress, and scales or fails without touching the mail path.

Which domain a request is for: the address the client sent
(``emailaddress`` or the Autodiscover ``EMailAddress``), else the Host
header (``autoconfig.example.com`` → ``example.com``), else the only domain
when there is one.  The documents themselves are made by :mod:`.documents`;
the policy by :mod:`correo_server.mtasts.policy`.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .. import logs
from ..config import Domain, ServerConfig
from ..metrics import Registry
from ..mtasts import policy as stspolicy
from ..sideport import SidePort
from ..statusdoc import rfc3339
from . import documents as docs

log = logs.get(__name__)

THUNDERBIRD_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # compared in lower case
MOBILECONFIG_PATH = "/mail.mobileconfig"
HOST_PREFIXES = ("autoconfig.", "autodiscover.", "mta-sts.")
_HEADERS = {"X-Content-Type-Options": "nosniff"}


def host_name(host: str | None) -> str:
    """The Host header without its port, lower case."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host.rstrip(".")


def policies(cfg: ServerConfig) -> dict[str, str]:
    """The MTA-STS policy file of every domain name that publishes one."""
    out = {}
    for d in cfg.domains:
        if d.mta_sts is not None:
            text = stspolicy.render(d.mta_sts.mode, d.mta_sts.max_age_seconds, d.mta_sts.mx)
            out.update({name: text for name in d.all_names})
    return out


class AutoconfigService:
    def __init__(self, config: ServerConfig, config_dir: str) -> None:
        self.config = config
        self.config_dir = config_dir
        self.metrics = Registry()
        self.metrics.counter("autoconfig_requests_total", "Autoconfiguration and MTA-STS requests by document and result")
        self.policies = policies(config)
        self.served: dict[str, int] = {}
        self.sideport: SidePort | None = None
        self._runner: web.AppRunner | None = None
        self.ports: dict[str, int] = {}

    # -- which domain ---------------------------------------------------------
    def domain_for(self, host: str, address: str | None) -> Domain:
        cfg = self.config
        if address:
            name = docs.address_domain(address)
            domain = cfg.domain_for(name)
            if domain is None:
                raise LookupError(f"{name} is not hosted here")
            return domain
        name = host_name(host)
        for prefix in ("", *HOST_PREFIXES):
            if name.startswith(prefix) and (domain := cfg.domain_for(name[len(prefix):])) is not None:
                return domain
        candidates = [d for d in cfg.domains if d.autoconfig]
        if len(candidates) == 1:
            return candidates[0]
        raise LookupError(f"which domain? {name or 'no Host'} is not one served here; add ?emailaddress=")

    # -- handlers ---------------------------------------------------------------
    def _count(self, document: str, result: str) -> None:
        self.metrics.inc("autoconfig_requests_total", document=document, result=result)
        key = f"{document}:{result}"
        self.served[key] = self.served.get(key, 0) + 1

    def _text(self, status: int, text: str, document: str) -> web.Response:
        self._count(document, "error" if status >= 400 else "ok")
        return web.Response(status=status, text=text + "\n", headers=_HEADERS)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        lower = path.lower()
        try:
            if lower == AUTODISCOVER_PATH:
                return await self._autodiscover(request)
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=_HEADERS)
            if path in THUNDERBIRD_PATHS:
                return self._thunderbird(request)
            if path == MOBILECONFIG_PATH:
                return self._mobileconfig(request)
            if path == stspolicy.WELL_KNOWN_PATH:
                return self._mta_sts(request)
            if path == "/":
                return self._index(request)
        except docs.BadRequest as exc:
            return self._text(400, f"bad request: {exc}", "request")
        except LookupError as exc:
            return self._text(404, f"not found: {exc.args[0]}", "request")
        return self._text(404, f"not found: {path}", "request")

    def _account(self, request: web.Request, address: str | None) -> docs.Account:
        domain = self.domain_for(request.host, address)
        if not domain.autoconfig:
            raise LookupError(f"autoconfiguration is off for {domain.name}")
        return docs.account(self.config, domain, address)

    def _served(self, request: web.Request, document: str, acc: docs.Account, body: bytes,
                content_type: str = "application/xml", **headers: str) -> web.Response:
        self._count(document, "ok")
        log.info("autoconfig_served", document=document, domain=acc.domain.name, client=request.remote)
        return web.Response(body=body, content_type=content_type, headers={**_HEADERS, **headers},
                            charset="utf-8" if content_type.endswith("xml") else None)

    def _thunderbird(self, request: web.Request) -> web.Response:
        acc = self._account(request, request.query.get("emailaddress"))
        return self._served(request, "thunderbird", acc, docs.thunderbird(acc))

    async def _autodiscover(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await request.content.read(docs.MAX_REQUEST_BYTES + 1)
            try:
                address, schema = docs.autodiscover_request(body)
            except docs.BadRequest as exc:
                self._count("autodiscover", "error")
                return web.Response(body=docs.autodiscover_error(600, f"Invalid Request: {exc}"),
                                    content_type="application/xml", charset="utf-8", headers=_HEADERS)
        elif request.method in ("GET", "HEAD"):
            address, schema = request.query.get("emailaddress", ""), docs.OUTLOOK_2006A
            if not address:
                raise docs.BadRequest("an Autodiscover request needs an email address (POST it, or ?emailaddress=)")
        else:
            raise web.HTTPMethodNotAllowed(request.method, ["POST", "GET", "HEAD"], headers=_HEADERS)
        if schema.rstrip("/") != docs.OUTLOOK_2006A:
            self._count("autodiscover", "error")
            return web.Response(body=docs.autodiscover_error(601, f"The requested schema is not available: {schema}"),
                                content_type="application/xml", charset="utf-8", headers=_HEADERS)
        acc = self._account(request, address)
        return self._served(request, "autodiscover", acc, docs.autodiscover(acc))

    def _mobileconfig(self, request: web.Request) -> web.Response:
        acc = self._account(request, request.query.get("emailaddress"))
        return self._served(request, "mobileconfig", acc, docs.mobileconfig(acc), docs.MOBILECONFIG_TYPE, **{
            "Content-Disposition": f'attachment; filename="{acc.domain.name}.mobileconfig"'})

    def _mta_sts(self, request: web.Request) -> web.Response:
        host = host_name(request.host)
        if not host.startswith("mta-sts."):
            raise LookupError(f"the MTA-STS policy is served on mta-sts.<domain>, not {host or 'no Host'}")
        text = self.policies.get(host[len("mta-sts."):])
        if text is None:
            raise LookupError(f"{host[len('mta-sts.'):]} publishes no MTA-STS policy here")
        self._count("mta-sts", "ok")
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers=_HEADERS)

    def _index(self, request: web.Request) -> web.Response:
        names = ", ".join(n for d in self.config.domains for n in d.all_names)
        lines = [f"correo autoconfiguration for {names}",
                 *(f"  {p}" for p in THUNDERBIRD_PATHS), f"  POST {AUTODISCOVER_PATH}",
                 f"  {MOBILECONFIG_PATH}?emailaddress=you@domain",
                 f"  {stspolicy.WELL_KNOWN_PATH} (on mta-sts.<domain>)"]
        return self._text(200, "\n".join(lines), "index")

    # -- lifecycle --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"service": "autoconfig", "ready": self._runner is not None,
                "time": rfc3339(datetime.now(timezone.utc)), "served": dict(sorted(self.served.items())),
                "mtaSts": {name: stspolicy.policy_id(text) for name, text in sorted(self.policies.items())}}

    async def start(self) -> dict[str, int]:
        app = web.Application(client_max_size=docs.MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listen = self.config.autoconfig.listen
        site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
        await site.start()
        server = site._server
        port = server.sockets[0].getsockname()[1] if server and server.sockets else listen.port
        self.sideport = SidePort(self.config.autoconfig.http, "autoconfig", metrics=self.metrics, status=self.status,
                                 ready=lambda: self._runner is not None)
        http_port = await self.sideport.start()
        self.ports = {"autoconfig": port, "http": http_port}
        log.info("autoconfig_started", domains=[d.name for d in self.config.domains],
                 mta_sts=sorted(self.policies), **self.ports)
        return dict(self.ports)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.sideport is not None:
            await self.sideport.stop()
