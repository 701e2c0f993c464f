"""The DNS records a domain owner must publish, on the real API server: the
operator writes them into ``status.dnsRecords`` (client SRV records, the
``_mta-sts`` TXT whose id is the policy's the autoconfig pods serve,
TLS-RPT, the autoconfig names), points the web names at the autoconfig
Ingress (its class from the chart's values) once its controller publishes
an address, and
``kubectl get maildomains -o json | correo status --dns --from -`` turns
them into a zone a real zone parser (dnspython) reads back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from envkit import apply, condition, get, wait_for
from podkit import DOMAIN_NAME, resources

from correo_server import config as cfgmod
from correo_server.autoconfig.service import policies
from correo_server.mtasts import policy as stspolicy

ROOT = Path(__file__).resolve().parents[2]
INGRESS_IP = "192.0.2.10"


@pytest.fixture
def handled(kubectl, namespace, operator):
    """The example domain, with an enforced MTA-STS policy and an autoconfig Ingress, reconciled."""
    objects = resources(namespace)
    objects[0]["spec"]["mtaSts"] = {"mode": "enforce", "maxAgeSeconds": 86400}
    objects[0]["spec"]["tlsReporting"] = {"rua": ["mailto:tls-reports@example.com"]}
    # The class comes from the chart's values (the operator's default), the issuer from the MailDomain.
    objects[0]["spec"]["autoconfig"] = {"ingress": {"issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"}}}
    apply(kubectl, namespace, objects)
    operator.start("autoconfigIngress.className=nginx", "autoconfigIngress.issuer=Issuer/not-used")
    wait_for(lambda: condition(get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")), timeout=60,
             what=lambda: f"status written\n{operator.log()[-3000:]}")
    return objects


def records(kubectl, namespace) -> dict[tuple[str, str], str]:
    status = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")["status"]
    return {(r["name"], r["type"]): r["value"] for r in status.get("dnsRecords") or []}


def test_the_operator_writes_the_records_and_follows_the_ingress_address(kubectl, namespace, handled, operator):
    # The DKIM key is made by the operator; its record follows once it exists.
    found = wait_for(lambda: (r := records(kubectl, namespace)).get(("correo._domainkey.example.com.", "TXT"))
                     and r, timeout=60, what="the DKIM record in status")
    assert found[("_submissions._tcp.example.com.", "SRV")] == "0 1 465 mail.example.com."
    assert found[("_imaps._tcp.example.com.", "SRV")] == "0 1 993 mail.example.com."
    assert found[("_smtp._tls.example.com.", "TXT")] == "v=TLSRPTv1; rua=mailto:tls-reports@example.com"
    # The id announced is the one of the policy the autoconfig pods serve (from the ConfigMap they mount).
    cm = kubectl.json("get", f"configmap/{DOMAIN_NAME}-config", "-n", namespace)
    served = policies(cfgmod.parse(cm["data"][cfgmod.CONFIG_FILE]))["example.com"]
    assert "mode: enforce" in served
    assert found[("_mta-sts.example.com.", "TXT")] == stspolicy.txt_record(served)
    # No address on the Ingress yet: the web names point at the mail host.
    assert found[("mta-sts.example.com.", "CNAME")] == "mail.example.com."

    # The Ingress controller publishes the load balancer's address; the records follow it.
    ingress = f"ingress/{DOMAIN_NAME}-autoconfig"
    made = get(kubectl, namespace, ingress)
    assert made["spec"]["ingressClassName"] == "nginx"
    assert made["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    kubectl.run("patch", ingress, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": INGRESS_IP}]}}}))
    moved = wait_for(lambda: (r := records(kubectl, namespace)).get(("mta-sts.example.com.", "A")) and r,
                     timeout=60, what=lambda: f"the records at the Ingress address\n{operator.log()[-2000:]}")
    for name in ("mta-sts.example.com.", "autoconfig.example.com.", "autodiscover.example.com."):
        assert moved[(name, "A")] == INGRESS_IP and (name, "CNAME") not in moved
    endpoints = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")["status"]["endpoints"]
    assert endpoints["autoconfig"] == "https://autoconfig.example.com/"

    # What the owner pastes into the zone, from kubectl's own output.
    listing = kubectl.run("get", "maildomains", "-n", namespace, "-o", "json").stdout
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "status", "--dns", "--from", "-"],
                          input=listing, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    zone = dns.zone.from_text(done.stdout, origin="example.com.", relativize=False, check_origin=False)
    got = {(str(name), dns.rdatatype.to_text(rds.rdtype)):
           b"".join(rds[0].strings).decode() if rds.rdtype == dns.rdatatype.TXT else rds[0].to_text()
           for name, rds in zone.iterate_rdatasets()}
    assert got == records(kubectl, namespace)
