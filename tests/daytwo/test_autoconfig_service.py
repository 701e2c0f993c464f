"""``correo serve autoconfig`` over HTTP: which domain a request is for (the
address, the Host), the MTA-STS policy on ``mta-sts.<domain>`` only and as
RFC 8461 writes it, with the id the MailDomain status announces, bad requests
answered plainly, and nothing of the side port on the public port."""
from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from daytwo_support import check_rfc8461_policy, maildomain, server_config

from correo_operator import status as statusmod
from correo_server.autoconfig.service import AutoconfigService, host_name
from correo_server.config import Listen
from correo_server.mtasts import policy as stspolicy

R2006A = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
LOOPBACK = dict(listen=Listen("127.0.0.1", 0), http=Listen("127.0.0.1", 0))
DOMAIN = maildomain(aliasDomains=["example.net"], hostname="mx.example.com", tls={"secretName": "mail-tls"},
                    mtaSts={"mode": "enforce", "maxAgeSeconds": 86400, "mx": ["*.backup.example.org"]})


@pytest.fixture
async def served():
    service = AutoconfigService(server_config(DOMAIN, **LOOPBACK), ".")
    await service.start()
    base = f"http://127.0.0.1:{service.ports['autoconfig']}"
    async with aiohttp.ClientSession() as session:
        async def get(path, host="autoconfig.example.com", method="GET", **kw):
            async with session.request(method, base + path, headers={"Host": host}, allow_redirects=False,
                                       **kw) as rsp:
                return rsp.status, rsp.headers, await rsp.read()
        get.service = service
        get.side = f"http://127.0.0.1:{service.ports['http']}"
        get.session = session
        yield get
    await service.stop()


class TestMtaSts:
    async def test_the_policy_follows_rfc_8461_and_matches_the_announced_id(self, served):
        status, headers, body = await served("/.well-known/mta-sts.txt", host="mta-sts.example.com")
        assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
        text = body.decode()
        fields = check_rfc8461_policy(text)
        assert fields == {"version": ["STSv1"], "mode": ["enforce"],
                          "mx": ["mx.example.com", "*.backup.example.org"], "max_age": ["86400"]}
        assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
        records = statusmod.dns_records(DOMAIN, None)
        txt = {r["name"]: r["value"] for r in records if r["purpose"] == "MTA-STS" and r["type"] == "TXT"}
        assert txt == {"_mta-sts.example.com.": f"v=STSv1; id={stspolicy.policy_id(text)}",
                       "_mta-sts.example.net.": f"v=STSv1; id={stspolicy.policy_id(text)}"}
        # correo's own outbound side reads it back as it was meant.
        assert stspolicy.parse(text) == stspolicy.Policy("enforce", 86400, ("mx.example.com", "*.backup.example.org"))

    async def test_alias_domains_serve_the_same_policy(self, served):
        a = await served("/.well-known/mta-sts.txt", host="mta-sts.example.com")
        b = await served("/.well-known/mta-sts.txt", host="MTA-STS.example.net:443")
        assert a[0] == b[0] == 200 and a[2] == b[2]

    @pytest.mark.parametrize("host", ["example.com", "autoconfig.example.com", "mta-sts.elsewhere.test", ""])
    async def test_only_mta_sts_hosts_of_hosted_domains_have_a_policy(self, served, host):
        status, _, body = await served("/.well-known/mta-sts.txt", host=host)
        assert status == 404 and body.startswith(b"not found: ")

    async def test_a_changed_policy_gets_a_new_id(self):
        ids = set()
        for mts in ({"mode": "testing"}, {"mode": "enforce"}, {"mode": "enforce", "maxAgeSeconds": 3600},
                    {"mode": "enforce", "mx": ["backup.example.com"]}):
            records = statusmod.dns_records(maildomain(tls={"secretName": "t"}, mtaSts=mts), None)
            ids |= {r["value"] for r in records if r["name"] == "_mta-sts.example.com."}
        assert len(ids) == 4


class TestWhichDomain:
    async def test_the_host_names_the_domain(self, served):
        status, _, body = await served("/mail/config-v1.1.xml", host="autoconfig.example.net")
        assert status == 200
        assert ET.fromstring(body).find("emailProvider").get("id") == "example.com"

    async def test_the_address_wins_over_the_host(self, served):
        status, _, body = await served("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40example.net",
                                       host="127.0.0.1")
        assert status == 200 and b"mx.example.com" in body

    async def test_an_address_of_another_domain_is_not_found(self, served):
        status, _, body = await served("/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.test")
        assert status == 404 and b"elsewhere.test is not hosted here" in body

    async def test_one_domain_answers_any_host(self, served):
        status, _, _ = await served("/mail/config-v1.1.xml", host="127.0.0.1:2080")
        assert status == 200

    def test_host_header_forms(self):
        assert [host_name(h) for h in ("A.example.com:443", "[::1]:80", "example.com.", "", None)] == [
            "a.example.com", "::1", "example.com", "", ""]


class TestAutodiscover:
    BODY = ("<Autodiscover xmlns='http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006'>"
            "<Request><EMailAddress>alice@example.com</EMailAddress><AcceptableResponseSchema>{}"
            "</AcceptableResponseSchema></Request></Autodiscover>")

    @pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml",
                                      "/AutoDiscover/AutoDiscover.xml"])
    async def test_outlook_posts_in_any_case(self, served, path):
        body = self.BODY.format("http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a")
        status, headers, out = await served(path, host="autodiscover.example.com", method="POST", data=body)
        assert status == 200 and headers["Content-Type"].startswith("application/xml")
        login = ET.fromstring(out).findall(f".//{R2006A}LoginName")
        assert {e.text for e in login} == {"alice@example.com"}

    async def test_a_schema_correo_does_not_speak_gets_error_601(self, served):
        body = self.BODY.format("http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006")
        status, _, out = await served("/autodiscover/autodiscover.xml", method="POST", data=body)
        assert status == 200 and b"<ErrorCode>601</ErrorCode>" in out

    async def test_garbage_gets_error_600(self, served):
        status, _, out = await served("/autodiscover/autodiscover.xml", method="POST", data=b"<<<")
        assert status == 200 and b"<ErrorCode>600</ErrorCode>" in out

    async def test_an_oversized_request_is_refused_unread(self, served):
        status, _, out = await served("/autodiscover/autodiscover.xml", method="POST", data=b"x" * 100_000)
        assert status == 200 and b"<ErrorCode>600</ErrorCode>" in out and b"larger than 16384 bytes" in out


class TestHttp:
    async def test_the_profile_downloads_as_an_apple_configuration(self, served):
        status, headers, body = await served("/mail.mobileconfig?emailaddress=alice%40example.com")
        assert status == 200 and headers["Content-Type"] == "application/x-apple-aspen-config"
        assert headers["Content-Disposition"] == 'attachment; filename="example.com.mobileconfig"'
        assert plistlib.loads(body)["PayloadContent"][0]["EmailAddress"] == "alice@example.com"

    @pytest.mark.parametrize("path", ["/metrics", "/status", "/healthz", "/etc/passwd", "/mail/../../x"])
    async def test_the_public_port_serves_documents_only(self, served, path):
        status, _, _ = await served(path)
        assert status == 404

    async def test_the_side_port_has_health_metrics_and_status(self, served):
        await served("/mail/config-v1.1.xml")
        async with served.session.get(served.side + "/status") as rsp:
            doc = await rsp.json()
        assert doc["service"] == "autoconfig" and doc["ready"] is True
        assert doc["served"] == {"thunderbird:ok": 1}
        assert set(doc["mtaSts"]) == {"example.com", "example.net"}
        async with served.session.get(served.side + "/metrics") as rsp:
            assert 'correo_autoconfig_requests_total{document="thunderbird",result="ok"} 1' in await rsp.text()

    async def test_a_wrong_method_is_405(self, served):
        status, headers, _ = await served("/mail/config-v1.1.xml", method="POST", data=b"x")
        assert status == 405 and "GET" in headers["Allow"]

    async def test_a_bad_address_is_400(self, served):
        status, _, body = await served("/mail/config-v1.1.xml?emailaddress=not-an-address")
        assert status == 400 and b"is not a mail address" in body

    async def test_autoconfig_can_be_switched_off_while_the_policy_stays(self):
        domain = maildomain(autoconfig={"enabled": False})
        service = AutoconfigService(server_config(domain, **LOOPBACK), ".")
        await service.start()
        try:
            base = f"http://127.0.0.1:{service.ports['autoconfig']}"
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/mail/config-v1.1.xml", headers={"Host": "autoconfig.example.com"}) as r:
                    assert r.status == 404
                async with session.get(base + "/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.com"}) as r:
                    assert r.status == 200 and "mode: testing" in await r.text()
        finally:
            await service.stop()
