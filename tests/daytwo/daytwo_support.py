"""MailDomains for the day-two tests, and the ``correo.yaml`` the renderer
makes of them (what ``correo serve autoconfig`` reads in a pod)."""
from __future__ import annotations

import dataclasses
import re

from correo_operator import model, render
from correo_server import config as cfgmod

UID = "0b7a3d2e-1111-4c5d-9e8f-123456789abc"


def maildomain(**spec) -> model.MailDomain:
    return model.MailDomain.from_object({
        "apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
        "metadata": {"name": "example-com", "namespace": "mail", "uid": UID, "generation": 1},
        "spec": {"domain": "example.com", **spec}})


def server_config(domain: model.MailDomain, **autoconfig) -> cfgmod.ServerConfig:
    """The rendered correo.yaml, read back as the servers read it."""
    cm = next(o for o in render.render(domain, [], {}) if o["kind"] == "ConfigMap")
    cfg = cfgmod.parse(cm["data"][cfgmod.CONFIG_FILE])
    if autoconfig:
        cfg = dataclasses.replace(cfg, autoconfig=dataclasses.replace(cfg.autoconfig, **autoconfig))
    return cfg


# RFC 8461 section 3.2's grammar, written out independently of correo's
# parser: every line of a policy is one of these fields (the RFC fixes no
# order; each required field is counted instead).
RFC8461_LINE = re.compile(
    r"^(?:version:[ \t]*STSv1"
    r"|mode:[ \t]*(?:testing|enforce|none)"
    r"|max_age:[ \t]*[0-9]{1,10}"
    r"|mx:[ \t]*(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|[A-Za-z0-9][A-Za-z0-9_.-]{0,31}:[ \t]*[^\r\n]+)[ \t]*$")


def check_rfc8461_policy(text: str) -> dict[str, list[str]]:
    """The fields of a policy file that follows RFC 8461's ABNF (CRLF or LF
    terms, version/mode/max_age once each, mx at least once unless mode none);
    AssertionError otherwise."""
    assert text.endswith("\n"), "the last line ends with a line break"
    lines = text[:-1].split("\n")
    fields: dict[str, list[str]] = {}
    for line in lines:
        line = line.removesuffix("\r")
        assert RFC8461_LINE.match(line), f"not an RFC 8461 policy line: {line!r}"
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.strip())
    for name in ("version", "mode", "max_age"):
        assert len(fields.get(name, [])) == 1, f"{name} must appear exactly once"
    assert int(fields["max_age"][0]) <= 31557600
    if fields["mode"] != ["none"]:
        assert fields.get("mx"), "a policy that is not mode none lists mx patterns"
    return fields
