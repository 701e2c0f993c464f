"""The MailDomain API for client autoconfiguration and MTA-STS: the fields
(validated by the CRD's schema and CEL rule, as ``correo validate`` and the
API server check them), what render makes of them (a Deployment that holds
no secret, an Ingress with a cert-manager issuer, all strictly valid for
Kubernetes 1.36), and the DNS records and endpoints in status."""
from __future__ import annotations

import kubernetes_validate
import pytest
from daytwo_support import maildomain

from correo_operator import loading, render, statuspoll
from correo_operator import status as statusmod

K8S = "1.36.0"


def md(**spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
            "metadata": {"name": "example-com", "namespace": "mail"}, "spec": {"domain": "example.com", **spec}}


def errors(**spec) -> list[tuple[str, str]]:
    return loading.validate_object(loading.apply_defaults(md(**spec)))


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


class TestFields:
    def test_defaults_publish_a_testing_policy_and_serve_autoconfig(self):
        spec = maildomain().spec
        assert (spec.autoconfig.enabled, spec.autoconfig.replicas, spec.autoconfig.ingress) == (True, 1, None)
        assert (spec.mta_sts.mode, spec.mta_sts.max_age_seconds, spec.mta_sts.mx) == ("testing", 604800, ())
        assert maildomain().tls_report_uris == ("mailto:postmaster@example.com",)

    def test_enforce_needs_a_certificate(self):
        found = errors(mtaSts={"mode": "enforce"})
        assert [(p, m) for p, m in found if "enforce" in m] == [
            ("spec.mtaSts.mode", "mtaSts.mode enforce needs tls.secretName: senders that honour the policy "
                                 "deliver only over TLS with a valid certificate")]
        assert errors(mtaSts={"mode": "enforce"}, tls={"secretName": "mail-tls"}) == []

    @pytest.mark.parametrize("spec, field", [
        ({"mtaSts": {"mode": "strict"}}, "spec.mtaSts.mode"),
        ({"mtaSts": {"maxAgeSeconds": 60}}, "spec.mtaSts.maxAgeSeconds"),
        ({"mtaSts": {"maxAgeSeconds": 31557601}}, "spec.mtaSts.maxAgeSeconds"),
        ({"mtaSts": {"mx": ["*.*.example.net"]}}, "spec.mtaSts.mx[0]"),
        ({"tlsReporting": {"rua": ["tls@example.com"]}}, "spec.tlsReporting.rua[0]"),
        ({"tlsReporting": {"rua": ["http://plain.example.com/"]}}, "spec.tlsReporting.rua[0]"),
        ({"autoconfig": {"ingress": {"issuerRef": {"name": "x", "kind": "Vault"}}}},
         "spec.autoconfig.ingress.issuerRef.kind"),
        ({"autoconfig": {"ingress": {"issuerRef": {}}}}, "spec.autoconfig.ingress.issuerRef.name"),
        ({"autoconfig": {"replicas": 0}}, "spec.autoconfig.replicas"),
    ])
    def test_bad_values_are_refused_with_their_field(self, spec, field):
        assert field in [p for p, _ in errors(**spec)]


class TestRender:
    INGRESS = {"className": "nginx", "issuerRef": {"name": "letsencrypt"}}

    def rendered(self, **spec):
        return render.render(maildomain(**spec), [], {})

    @pytest.mark.parametrize("spec", [{}, {"autoconfig": {"ingress": INGRESS}, "aliasDomains": ["example.net"]},
                                      {"autoconfig": {"enabled": False, "ingress": {}}},
                                      {"autoconfig": {"ingress": {"issuerRef": {"name": "ca", "kind": "Issuer"},
                                                                  "tlsSecretName": "web-tls"}}}])
    def test_every_object_is_strictly_valid_for_kubernetes_1_36(self, spec):
        for obj in self.rendered(**spec):
            kubernetes_validate.validate(obj, K8S, strict=True)

    def test_the_autoconfig_pod_mounts_the_configuration_and_no_secret(self):
        (dep,) = [d for d in by_kind(self.rendered(), "Deployment") if d["metadata"]["name"] == "example-com-autoconfig"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == ["serve", "autoconfig", "--config", "/etc/correo"]
        (config,) = [v for v in pod["volumes"] if v["name"] == "config"]
        assert [list(s) for s in config["projected"]["sources"]] == [["configMap"]]
        (svc,) = [s for s in by_kind(self.rendered(), "Service") if s["metadata"]["name"] == "example-com-autoconfig"]
        assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 2080, "protocol": "TCP"}]

    def test_no_ingress_unless_asked(self):
        assert by_kind(self.rendered(), "Ingress") == []

    def test_the_ingress_covers_every_name_with_a_cert_manager_certificate(self):
        (ing,) = by_kind(self.rendered(autoconfig={"ingress": self.INGRESS}, aliasDomains=["example.net"]), "Ingress")
        hosts = ["autoconfig.example.com", "autodiscover.example.com", "mta-sts.example.com",
                 "autoconfig.example.net", "autodiscover.example.net", "mta-sts.example.net"]
        assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
        assert ing["metadata"]["ownerReferences"][0]["kind"] == "MailDomain"
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert ing["spec"]["tls"] == [{"hosts": hosts, "secretName": "example-com-autoconfig-tls"}]
        assert [r["host"] for r in ing["spec"]["rules"]] == hosts
        for rule in ing["spec"]["rules"]:
            (path,) = rule["http"]["paths"]
            assert path["backend"] == {"service": {"name": "example-com-autoconfig", "port": {"name": "http"}}}

    def test_a_namespaced_issuer_and_an_own_secret(self):
        (ing,) = by_kind(self.rendered(autoconfig={"enabled": False, "ingress": {
            "issuerRef": {"name": "ca", "kind": "Issuer"}, "tlsSecretName": "web-tls"}}), "Ingress")
        assert ing["metadata"]["annotations"] == {"cert-manager.io/issuer": "ca"}
        assert "ingressClassName" not in ing["spec"]
        assert ing["spec"]["tls"] == [{"hosts": ["mta-sts.example.com"], "secretName": "web-tls"}]

    def test_the_operators_defaults_fill_what_the_maildomain_leaves_unset(self):
        defaults = render.ingress_defaults("traefik", "Issuer/internal-ca")
        (ing,) = by_kind(render.render(maildomain(autoconfig={"ingress": {}}), [], {}, ingress_defaults=defaults),
                         "Ingress")
        assert ing["spec"]["ingressClassName"] == "traefik"
        assert ing["metadata"]["annotations"] == {"cert-manager.io/issuer": "internal-ca"}
        # What the MailDomain names wins; no Ingress is made because of defaults alone.
        (own,) = by_kind(render.render(maildomain(autoconfig={"ingress": self.INGRESS}), [], {},
                                       ingress_defaults=defaults), "Ingress")
        assert own["spec"]["ingressClassName"] == "nginx"
        assert own["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
        assert by_kind(render.render(maildomain(), [], {}, ingress_defaults=defaults), "Ingress") == []

    @pytest.mark.parametrize("text, kind, name", [
        ("letsencrypt", "ClusterIssuer", "letsencrypt"),
        ("ClusterIssuer/letsencrypt", "ClusterIssuer", "letsencrypt"),
        ("Issuer/ca", "Issuer", "ca"),
    ])
    def test_issuer_forms(self, text, kind, name):
        assert render.parse_issuer(text) == render.IssuerRef(name=name, kind=kind)

    @pytest.mark.parametrize("text", ["Certificate/x", "Issuer/", ""])
    def test_a_bad_issuer_is_refused(self, text):
        with pytest.raises(ValueError, match="NAME, ClusterIssuer/NAME or Issuer/NAME"):
            render.parse_issuer(text)

    def test_correo_render_takes_the_same_defaults_and_says_what_is_wrong(self, tmp_path):
        import subprocess
        import sys

        import yaml
        (tmp_path / "d.yaml").write_text(yaml.safe_dump(md(autoconfig={"ingress": {}})))
        cmd = [sys.executable, "-m", "correo_operator.cli", "render", str(tmp_path / "d.yaml")]
        done = subprocess.run([*cmd, "--ingress-class", "nginx", "--ingress-issuer", "letsencrypt"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        (ing,) = [o for o in yaml.safe_load_all(done.stdout) if o and o["kind"] == "Ingress"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
        done = subprocess.run([*cmd, "--ingress-issuer", "Vault/x"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "--ingress-issuer" in done.stderr and "Issuer/NAME" in done.stderr

    def test_the_network_policy_lets_the_world_reach_the_documents_and_nothing_out(self):
        (pol,) = [p for p in by_kind(self.rendered(), "NetworkPolicy") if p["metadata"]["name"].endswith("autoconfig")]
        assert pol["spec"]["ingress"][0] == {"ports": [{"protocol": "TCP", "port": 2080}]}
        assert pol["spec"]["egress"] == []

    def test_the_queue_may_fetch_receivers_policies_over_https(self):
        (pol,) = [p for p in by_kind(self.rendered(), "NetworkPolicy") if p["metadata"]["name"].endswith("queue")]
        ports = {p["port"] for rule in pol["spec"]["egress"] if "to" not in rule for p in rule["ports"]}
        assert ports == {25, 443, 465, 587}

    def test_the_configuration_carries_the_policy(self):
        from daytwo_support import server_config
        cfg = server_config(maildomain(hostname="mx.example.com", mtaSts={"mode": "none", "mx": ["b.example.com"]},
                                       autoconfig={"displayName": "Example"}))
        (dom,) = cfg.domains
        assert (dom.display_name, dom.autoconfig) == ("Example", True)
        assert (dom.mta_sts.mode, dom.mta_sts.max_age_seconds, dom.mta_sts.mx) == (
            "none", 604800, ("mx.example.com", "b.example.com"))


class TestStatus:
    def records(self, domain, address=None):
        return {(r["type"], r["name"]): r["value"] for r in statusmod.dns_records(domain, None, address)}

    def test_srv_records_prefer_implicit_tls_and_say_what_is_not_offered(self):
        records = self.records(maildomain(tls={"secretName": "t"}, hostname="mx.example.com",
                                          mailstore={"pop3": False}))
        assert records[("SRV", "_submissions._tcp.example.com.")] == "0 1 465 mx.example.com."
        assert records[("SRV", "_submission._tcp.example.com.")] == "10 1 587 mx.example.com."
        assert records[("SRV", "_imaps._tcp.example.com.")] == "0 1 993 mx.example.com."
        assert records[("SRV", "_imap._tcp.example.com.")] == "10 1 143 mx.example.com."
        assert records[("SRV", "_pop3s._tcp.example.com.")] == "0 0 0 ."
        assert records[("SRV", "_pop3._tcp.example.com.")] == "0 0 0 ."
        assert records[("SRV", "_sieve._tcp.example.com.")] == "0 1 4190 mx.example.com."

    def test_every_alias_domain_gets_its_records(self):
        records = self.records(maildomain(aliasDomains=["example.net"], tlsReporting={
            "rua": ["mailto:tls@example.com", "https://reports.example.com/tlsrpt"]}))
        for name in ("example.com", "example.net"):
            assert records[("TXT", f"_smtp._tls.{name}.")] == (
                "v=TLSRPTv1; rua=mailto:tls@example.com,https://reports.example.com/tlsrpt")
            assert records[("TXT", f"_mta-sts.{name}.")].startswith("v=STSv1; id=")
            assert ("CNAME", f"autoconfig.{name}.") in records

    @pytest.mark.parametrize("address, kind, value", [(None, "CNAME", "mail.example.com."),
                                                      ("203.0.113.7", "A", "203.0.113.7"),
                                                      ("2001:db8::7", "AAAA", "2001:db8::7"),
                                                      ("lb-1.elb.example", "CNAME", "lb-1.elb.example.")])
    def test_the_web_names_point_at_the_ingress_once_it_has_an_address(self, address, kind, value):
        records = self.records(maildomain(), address)
        for name in ("autoconfig.example.com.", "autodiscover.example.com.", "mta-sts.example.com."):
            assert records[(kind, name)] == value

    def test_no_autoconfig_names_when_it_is_off(self):
        names = {n for _, n in self.records(maildomain(autoconfig={"enabled": False}))}
        assert "mta-sts.example.com." in names and "autoconfig.example.com." not in names

    def test_the_operator_reads_the_ingress_address_and_names_the_endpoint(self):
        domain = maildomain(autoconfig={"ingress": {"className": "nginx"}})
        children = render.render(domain, [], {})
        (ing,) = by_kind(children, "Ingress")
        assert statuspoll.autoconfig_address(domain, children) is None
        ing["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}}
        assert statuspoll.autoconfig_address(domain, children) == "198.51.100.4"
        assert statuspoll.endpoints(domain, children)["autoconfig"] == "https://autoconfig.example.com/"
        assert statuspoll.endpoints(maildomain(), [])["autoconfig"] == "http://example-com-autoconfig.mail.svc"
