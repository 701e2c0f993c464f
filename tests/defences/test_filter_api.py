"""``spec.filter`` from YAML to the running relay: the CRD's defaults turn
sender authentication on, ``correo validate`` names the file and field of a
bad setting, the renderer writes ``relay.filter`` (and, for a managed rspamd,
its Deployment, Service, ConfigMap and NetworkPolicy), ``correo up``'s
configuration does the same on this machine, and the relay builds its
defences from what it reads."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from correo_operator import loading, render
from correo_operator.local import rspamd as localrspamd
from correo_operator.local import stack
from correo_operator.local.layout import Layout
from correo_server import config as cfgmod
from correo_server import defences

ROOT = Path(__file__).resolve().parents[2]

DOMAIN = """\
apiVersion: correo.dev/v1alpha1
kind: MailDomain
metadata: {{name: example-com, namespace: mail}}
spec:
  domain: example.com
{filter}
"""


def write(tmp_path: Path, filter_yaml: str = "", extra: str = "") -> Path:
    body = textwrap.indent(filter_yaml, "  ") if filter_yaml else ""
    (tmp_path / "domain.yaml").write_text(DOMAIN.format(filter=body) + extra)
    return tmp_path / "domain.yaml"


def load(tmp_path: Path, filter_yaml: str = "", extra: str = "") -> loading.Loaded:
    return loading.load_paths([str(write(tmp_path, filter_yaml, extra))])


def errors(tmp_path: Path, filter_yaml: str) -> list[str]:
    return [str(p) for p in load(tmp_path, filter_yaml).errors]


def test_sender_authentication_is_on_by_default_in_what_the_relay_reads(tmp_path):
    loaded = load(tmp_path)
    (domain,) = loaded.maildomains()
    flt = render.server_config(domain).relay.filter
    assert flt == cfgmod.FilterConfig()  # written out in full, with its defaults
    assert flt.sender_auth == cfgmod.SenderAuthConfig(enabled=True, reject_spf_fail=True, protect_own_domains=True,
                                                      enforce_dmarc=True)
    assert flt.rspamd is None and flt.dnsbl.zones == ()
    text = cfgmod.dump(render.server_config(domain))
    assert "senderAuth:" in text and "protectOwnDomains: true" in text
    # The defaults the API server fills in are the ones the model holds.
    assert loaded.domains[0].obj["spec"]["filter"]["senderAuth"] == {
        "enabled": True, "rejectSpfFail": True, "protectOwnDomains": True, "enforceDmarc": True}


def test_every_setting_reaches_the_relay_configuration(tmp_path):
    loaded = load(tmp_path, textwrap.dedent("""\
        filter:
          senderAuth: {rejectSpfFail: false, enforceDmarc: false}
          rspamd:
            url: http://rspamd.mail.svc:11333
            passwordSecretRef: {name: rspamd}
            timeoutSeconds: 7
            onFailure: Accept
            virusSymbols: [MY_AV_HIT]
          dnsbl:
            zones:
              - {zone: zen.spamhaus.org}
              - {zone: bl.example.net, action: Score, weight: 2, returnCodes: [127.0.0.2, 127.0.1.0/24]}
              - {zone: list.dnswl.org, action: Allow, message: welcome}
            threshold: 3
            cacheSeconds: 60
        """))
    (domain,) = loaded.maildomains()
    flt = render.server_config(domain).relay.filter
    assert flt.sender_auth == cfgmod.SenderAuthConfig(reject_spf_fail=False, enforce_dmarc=False)
    assert flt.rspamd == cfgmod.RspamdConfig(url="http://rspamd.mail.svc:11333", password_file="rspamd/password",
                                             timeout_seconds=7.0, on_failure="accept", virus_symbols=("MY_AV_HIT",))
    assert [(z.zone, z.action, z.weight, z.return_codes, z.message) for z in flt.dnsbl.zones] == [
        ("zen.spamhaus.org", "reject", 1, (), ""), ("bl.example.net", "score", 2, ("127.0.0.2", "127.0.1.0/24"), ""),
        ("list.dnswl.org", "allow", 1, (), "welcome")]
    assert (flt.dnsbl.threshold, flt.dnsbl.cache_seconds) == (3, 60)
    assert cfgmod.parse(cfgmod.dump(render.server_config(domain))).relay.filter == flt
    # The password Secret is mounted where the configuration says, and the relay may reach rspamd's port.
    objects = render.render(domain, [], {})
    relay = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "example-com-relay")
    sources = relay["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert {"secret": {"name": "rspamd", "items": [{"key": "password", "path": "rspamd/password"}]}} in sources
    egress = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "example-com-relay")
    assert {"ports": [{"protocol": "TCP", "port": 11333}]} in egress["spec"]["egress"]
    assert [p for p in loaded.problems if "passwordSecretRef" in p.field][0].severity == "warning"


BAD_SETTINGS = [
    ("filter: {rspamd: {timeoutSeconds: 5}}", "spec.filter.rspamd", "give the url of an rspamd"),
    ("filter: {rspamd: {managed: true, url: 'http://x:1'}}", "spec.filter.rspamd.url", "a managed rspamd has no url"),
    ("filter: {rspamd: {url: 'ftp://rspamd'}}", "spec.filter.rspamd.url", "does not match"),
    ("filter: {rspamd: {managed: true, passwordSecretRef: {name: p}}}", "spec.filter.rspamd.passwordSecretRef",
     "a password is for an rspamd given by url"),
    ("filter: {rspamd: {url: 'http://r:1', onFailure: Later}}", "spec.filter.rspamd.onFailure", "Tempfail"),
    ("filter: {rspamd: {url: 'http://r:1', timeoutSeconds: 0}}", "spec.filter.rspamd.timeoutSeconds", "minimum"),
    ("filter: {dnsbl: {zones: [{zone: zen.spamhaus.org, action: Block}]}}", "spec.filter.dnsbl.zones[0].action",
     "Reject"),
    ("filter: {dnsbl: {zones: [{zone: bl.test, returnCodes: [two]}]}}", "spec.filter.dnsbl.zones[0].returnCodes[0]",
     "does not match"),
    ("filter: {dnsbl: {threshold: 2, zones: [{zone: bl.test}]}}", "spec.filter.dnsbl.threshold",
     "a threshold needs at least one zone with action Score"),
    ("filter: {senderAuth: {enabled: maybe}}", "spec.filter.senderAuth.enabled", "boolean"),
    ("filter: {spamassassin: {}}", "spec.filter.spamassassin", "unknown field"),
]


def test_correo_validate_names_the_file_and_the_field_of_each_bad_setting(tmp_path):
    docs = [DOMAIN.replace("example-com", f"d{i}").replace("example.com", f"d{i}.example")
            .format(filter=textwrap.indent(setting, "  ")) for i, (setting, _, _) in enumerate(BAD_SETTINGS)]
    path = tmp_path / "domains.yaml"
    path.write_text("---\n".join(docs))
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "validate", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"correo validate: {len(BAD_SETTINGS)} errors in 1 file" in done.stderr
    for i, (_, field, words) in enumerate(BAD_SETTINGS):
        lines = [line for line in done.stderr.splitlines() if f"MailDomain mail/d{i}): {field}:" in line]
        assert len(lines) == 1, (field, done.stderr)
        assert lines[0].startswith(f"{path}:") and f" (document {i + 1}," in lines[0] and words in lines[0], lines


def test_a_hand_written_configuration_with_a_bad_filter_is_refused_with_its_key(tmp_path):
    cfg = cfgmod.ServerConfig(name="x", hostname="mx.example.com", domains=(cfgmod.Domain("example.com"),),
                              relay=cfgmod.RelayConfig(filter=cfgmod.FilterConfig(
                                  rspamd=cfgmod.RspamdConfig(url="rspamd:11333", on_failure="later"))))
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.parse(cfgmod.dump(cfg), source="correo.yaml")
    assert "relay.filter.rspamd.url: must be an http:// or https:// URL" in str(err.value)
    assert "relay.filter.rspamd.onFailure: must be tempfail or accept" in str(err.value)
    text = cfgmod.dump(cfgmod.ServerConfig(name="x", hostname="h", relay=cfgmod.RelayConfig(
        filter=cfgmod.FilterConfig()))).replace("rejectSpfFail: true", "rejectSpfFail: sometimes")
    with pytest.raises(cfgmod.ConfigError, match="relay.filter.senderAuth.rejectSpfFail: expected true or false"):
        cfgmod.parse(text)


def test_a_managed_rspamd_is_rendered_restricted_and_fenced(tmp_path):
    (domain,) = load(tmp_path, "filter: {rspamd: {managed: true}}").maildomains()
    objects = render.render(domain, [], {}, rspamd_image="registry.test/rspamd:9")
    mine = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["metadata"]["name"] == "example-com-rspamd"}
    assert set(mine) == {("ConfigMap", "example-com-rspamd"), ("Deployment", "example-com-rspamd"),
                         ("Service", "example-com-rspamd"), ("NetworkPolicy", "example-com-rspamd")}
    assert render.server_config(domain).relay.filter.rspamd.url == "http://example-com-rspamd.mail.svc:11333"
    pod = mine["Deployment", "example-com-rspamd"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.test/rspamd:9"
    # The restricted Pod Security Standard, and nothing written outside empty folders.
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                  "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    assert 'bind_socket = "*:11333";' in mine["ConfigMap", "example-com-rspamd"]["data"]["worker-normal.inc"]
    # Only the relay's pods may ask it; the relay may reach it.
    policy = mine["NetworkPolicy", "example-com-rspamd"]["spec"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": render._selector(domain, "relay")}}],
                                  "ports": [{"protocol": "TCP", "port": 11333}]}]
    relay_policy = next(o for o in objects if o["kind"] == "NetworkPolicy"
                        and o["metadata"]["name"] == "example-com-relay")["spec"]
    assert {"to": [{"podSelector": {"matchLabels": render._selector(domain, "rspamd")}}],
            "ports": [{"protocol": "TCP", "port": 11333}]} in relay_policy["egress"]
    # Every child is the MailDomain's: gone with it, found by its labels.
    for obj in mine.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "example-com"
    # Without managed: none of it.
    (plain,) = load(tmp_path, "filter: {rspamd: {url: 'http://r:1'}}").maildomains()
    assert not [o for o in render.render(plain, [], {}) if o["metadata"]["name"].endswith("-rspamd")]


def test_the_relay_and_the_queue_mount_the_domains_srs_keys(tmp_path):
    (domain,) = load(tmp_path).maildomains()
    objects = render.render(domain, [], {})
    cfg = render.server_config(domain)
    assert cfg.domains[0].srs_key_file == "srs/example.com.keys"
    expected = {"secret": {"name": "example-com-srs", "optional": True,
                           "items": [{"key": "srs.keys", "path": "srs/example.com.keys"}]}}
    for name in ("example-com-relay", "example-com-queue"):
        workload = next(o for o in objects if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name)
        assert expected in workload["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"], name
    assert "example-com-srs" in render.referenced_secrets(domain, [])


def test_correo_up_runs_the_relay_with_the_filter_and_makes_an_srs_key_once(tmp_path):
    loaded = load(tmp_path / "yaml" if (tmp_path / "yaml").mkdir() is None else tmp_path)
    layout = Layout.at(tmp_path / "data")
    ports = stack.choose_ports(stack.Options(ephemeral=True))
    stack.write_config(loaded, layout, ports, stack.Options(ephemeral=True, dns=("127.0.0.1:5353",)))
    cfg = cfgmod.load(layout.config)
    assert cfg.relay.filter == cfgmod.FilterConfig()
    assert cfg.nameservers == ("127.0.0.1:5353",)
    assert cfg.relay.mailstore_http == cfgmod.Listen("127.0.0.1", ports["mailstore_http"])
    assert cfg.relay.queue_http == cfgmod.Listen("127.0.0.1", ports["queue_http"])
    key_file = cfg.path(cfg.domains[0].srs_key_file)
    key = key_file.read_text()
    assert len(key.strip()) >= 40 and oct(key_file.stat().st_mode & 0o777) == "0o600"
    stack.write_config(loaded, layout, ports, stack.Options(ephemeral=True))
    assert key_file.read_text() == key  # kept: bounce addresses already out there stay valid


def test_a_managed_rspamd_under_correo_up_is_a_local_process_or_none_at_all(tmp_path, monkeypatch):
    loaded = load(tmp_path, "filter: {rspamd: {managed: true, onFailure: Accept}}")
    layout = Layout.at(tmp_path / "data")
    ports = stack.choose_ports(stack.Options(ephemeral=True))
    monkeypatch.setattr(localrspamd, "available", lambda: True)
    stack.write_config(loaded, layout, ports, stack.Options(ephemeral=True, dns=("127.0.0.1:5353",)))
    flt = cfgmod.load(layout.config).relay.filter
    assert flt.rspamd == cfgmod.RspamdConfig(url=f"http://127.0.0.1:{ports['rspamd']}", on_failure="accept")
    local_d = layout.root / "rspamd" / "local.d"
    assert f'bind_socket = "127.0.0.1:{ports["rspamd"]}";' in (local_d / "worker-normal.inc").read_text()
    assert 'nameserver = ["127.0.0.1:5353"]' in (local_d / "options.inc").read_text()
    assert (local_d / "fuzzy_check.conf").read_text() == "enabled = false;\n"  # it would ask the system's DNS
    argv = localrspamd.command(layout)
    assert argv[argv.index("-c") + 1] == "/etc/rspamd/rspamd.conf"
    assert f"LOCAL_CONFDIR={layout.root / 'rspamd'}" in argv and f"DBDIR={layout.root / 'rspamd' / 'db'}" in argv
    # Not installed: no scanning rather than every message deferred for a scanner that never comes.
    monkeypatch.setattr(localrspamd, "available", lambda: False)
    stack.write_config(loaded, layout, ports, stack.Options(ephemeral=True))
    flt = cfgmod.load(layout.config).relay.filter
    assert flt.rspamd is None and flt.sender_auth.enabled


def test_the_relay_builds_its_defences_from_the_configuration(tmp_path):
    (tmp_path / "srs").mkdir()
    (tmp_path / "srs" / "example.com.keys").write_text("# rotated in May\nnew-key\nold-key\n")
    base = cfgmod.ServerConfig(name="x", hostname="mx.example.com", base_dir=str(tmp_path),
                               domains=(cfgmod.Domain("example.com", aliases=("example.net",),
                                                      srs_key_file="srs/example.com.keys"),))
    assert defences.build(base) is None  # no relay.filter: none (and a warning in the log)
    built = defences.build(cfgmod.ServerConfig(**{**base.__dict__, "relay": cfgmod.RelayConfig(
        filter=cfgmod.FilterConfig(sender_auth=cfgmod.SenderAuthConfig(reject_spf_fail=False)))}))
    assert built.auth is not None and built.auth.policy.reject_spf_fail is False
    assert built.auth.policy.protect_own_domains and built.auth.authserv_id == "mx.example.com"
    assert built.rspamd is None and built.dnsbl is None
    srs = built.srs.for_domain("example.net")
    assert srs is built.srs.for_domain("example.com") and srs.keys == [b"new-key", b"old-key"]
    off = defences.build(cfgmod.ServerConfig(**{**base.__dict__, "relay": cfgmod.RelayConfig(
        filter=cfgmod.FilterConfig(sender_auth=cfgmod.SenderAuthConfig(enabled=False)))}))
    assert off.auth is None
