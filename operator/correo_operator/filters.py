"""``spec.filter`` of a MailDomain → ``relay.filter`` of ``correo.yaml``, and
the pieces of the rendered objects the defences need.

The API (``crds/maildomains.yaml``, ``model.Filter``) speaks Kubernetes
(``Tempfail``, ``Reject``, Secret references); the servers' configuration
(``correo_server.config.FilterConfig``) speaks files and lower-case words.
:func:`filter_config` maps one onto the other, for the renderer and, through
it, for ``correo up``.  Sender authentication and the protection of our own
domains are on unless the MailDomain turns them off: the API defaults them
on, and the rendered configuration always carries the filter.

What a pod mounts for the defences (:func:`relay_sources`,
:func:`queue_sources`): the domain's SRS keys (Secret ``<base>-srs``, made by
``srskeys``; the relay verifies bounce addresses, the queue signs the
sender of forwards) and the password for an rspamd given by URL.  Where the
relay may connect besides the queue's LMTP (:func:`relay_egress`): the
queue's and the mailstore's side ports (refusal reports, mailbox usage)
and rspamd.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from correo_server import config as cfgmod

from . import managedrspamd
from .model import MailDomain

SRS_KEY_FIELD = "srs.keys"
RSPAMD_PASSWORD_FILE = "rspamd/password"


def srs_secret_name(domain: MailDomain) -> str:
    return f"{domain.name}-srs"


def srs_key_file(domain: MailDomain) -> str:
    return f"srs/{domain.domain}.keys"


def filter_config(domain: MailDomain) -> cfgmod.FilterConfig:
    """``relay.filter`` for one MailDomain (cluster addresses)."""
    f = domain.spec.filter
    sa = f.sender_auth
    rspamd = None
    if f.rspamd is not None:
        r = f.rspamd
        rspamd = cfgmod.RspamdConfig(
            url=managedrspamd.url(domain) if r.managed else (r.url or ""),
            password_file=RSPAMD_PASSWORD_FILE if (r.password_secret_ref and not r.managed) else None,
            timeout_seconds=float(r.timeout_seconds), on_failure=r.on_failure.lower(),
            virus_symbols=tuple(r.virus_symbols))
    return cfgmod.FilterConfig(
        sender_auth=cfgmod.SenderAuthConfig(enabled=sa.enabled, reject_spf_fail=sa.reject_spf_fail,
                                            protect_own_domains=sa.protect_own_domains,
                                            enforce_dmarc=sa.enforce_dmarc),
        rspamd=rspamd,
        dnsbl=cfgmod.DnsblConfig(
            zones=tuple(cfgmod.DnsblZoneConfig(zone=z.zone.lower(), action=z.action.lower(), weight=z.weight,
                                               return_codes=tuple(z.return_codes), message=z.message or "")
                        for z in f.dnsbl.zones),
            threshold=f.dnsbl.threshold, cache_seconds=f.dnsbl.cache_seconds),
    )


def referenced_secrets(domain: MailDomain) -> set[str]:
    out = {srs_secret_name(domain)}
    ref = domain.rspamd_password
    if ref is not None:
        out.add(ref.name)
    return out


def _srs_source(domain: MailDomain) -> dict:
    return {"secret": {"name": srs_secret_name(domain), "optional": True,
                       "items": [{"key": SRS_KEY_FIELD, "path": srs_key_file(domain)}]}}


def relay_sources(domain: MailDomain) -> list[dict]:
    """Projected-volume sources the relay needs for the defences."""
    out = [_srs_source(domain)]
    ref = domain.rspamd_password
    if ref is not None and not domain.managed_rspamd:
        out.append({"secret": {"name": ref.name, "items": [{"key": ref.key, "path": RSPAMD_PASSWORD_FILE}]}})
    return out


def queue_sources(domain: MailDomain) -> list[dict]:
    return [_srs_source(domain)]


def relay_egress(domain: MailDomain, *, queue_pods: dict, mailstore_pods: dict, rspamd_pods: dict,
                 queue_http: int, mailstore_http: int) -> list[dict]:
    """NetworkPolicy egress rules of the relay for the defences."""
    rules = [{"to": [queue_pods], "ports": [{"protocol": "TCP", "port": queue_http}]},
             {"to": [mailstore_pods], "ports": [{"protocol": "TCP", "port": mailstore_http}]}]
    rspamd = domain.spec.filter.rspamd
    if rspamd is not None and rspamd.managed:
        rules.append({"to": [rspamd_pods], "ports": [{"protocol": "TCP", "port": managedrspamd.PORT}]})
    elif rspamd is not None and rspamd.url:
        parts = urlsplit(rspamd.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        rules.append({"ports": [{"protocol": "TCP", "port": port}]})
    return rules
