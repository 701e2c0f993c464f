"""The rules in the API: Mailbox spec.sieve and spec.autoReply, MailDomain
spec.catchAll and spec.recipientDelimiter — validated with the script's line
and column, rendered into the files the servers read, and the previous valid
script kept when a new one does not compile."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from correo_operator import loading, mailrules, render
from correo_server import config as cfgmod
from correo_server import directory as dirmod

ROOT = Path(__file__).resolve().parents[2]

DOMAIN = """\
apiVersion: correo.dev/v1alpha1
kind: MailDomain
metadata: {name: example-com}
spec:
  domain: example.com
  aliasDomains: [example.net]
"""
SECRET = """\
---
apiVersion: v1
kind: Secret
metadata: {name: pw}
stringData: {password: secret-words}
"""


def mailbox(name: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: correo.dev/v1alpha1
        kind: Mailbox
        metadata: {{name: {name}}}
        spec:
          address: {name}@example.com
          passwordSecretRef: {{name: pw}}
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


def load(tmp_path: Path, domain_extra: str = "", *docs: str) -> loading.Loaded:
    path = tmp_path / "mail.yaml"
    path.write_text(DOMAIN + textwrap.indent(textwrap.dedent(domain_extra), "  ") + SECRET + "".join(docs))
    return loading.load_paths([str(path)])


def problems(loaded: loading.Loaded) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in loaded.errors]


class TestValidate:
    def test_a_broken_script_names_file_field_line_and_column(self, tmp_path):
        broken = mailbox("ana", """\
            sieve: |
              require "fileinto";
              if header :contains "subject" "x" {
                filein "Lists";
              }
            """)
        path = tmp_path / "mail.yaml"
        path.write_text(DOMAIN + SECRET + broken)
        result = subprocess.run([sys.executable, "-m", "correo_operator.cli", "validate", str(path)],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 1
        (line,) = [ln for ln in result.stderr.splitlines() if "spec.sieve" in ln]
        assert line.startswith(f"{path}:22 (document 3, Mailbox default/ana): spec.sieve: line 3, column 3 (mail.yaml line 22, column 7): ")
        assert "filein" in line and "fileinto" in line  # says what was meant

    def test_an_unsupported_extension_is_named(self, tmp_path):
        loaded = load(tmp_path, "", mailbox("ana", 'sieve: require "editheader"; addheader "X" "y";\n'))
        ((fld, msg), *_) = problems(loaded)
        assert fld == "spec.sieve" and msg.startswith("line 1, column 9: ") and "editheader" in msg

    def test_every_compile_problem_is_listed(self, tmp_path):
        loaded = load(tmp_path, "", mailbox("ana", 'sieve: "fileinto \\"A\\";\\nredirect 42;\\n"\n'))
        assert [f for f, _ in problems(loaded)] == ["spec.sieve", "spec.sieve"]

    def test_a_valid_script_and_auto_reply_pass(self, tmp_path):
        loaded = load(tmp_path, "catchAll: ana@example.net\n", mailbox("ana", """\
            sieve: |
              require ["fileinto", "envelope", "subaddress"];
              if envelope :detail "to" "news" { fileinto "News"; }
            autoReply:
              subject: Away
              body: Back on Monday.
              start: 2027-07-01T00:00:00Z
              end: 2027-07-15T00:00:00+02:00
            """))
        assert loaded.errors == []
        ana = loaded.mailboxes[0].resource
        assert ana.spec.auto_reply.interval_days == 7 and ana.spec.auto_reply.enabled is True
        assert loaded.maildomains()[0].spec.recipient_delimiter == "+"

    def test_an_auto_reply_that_ends_before_it_starts(self, tmp_path):
        loaded = load(tmp_path, "", mailbox("ana", """\
            autoReply: {body: x, start: '2027-07-15T00:00:00Z', end: '2027-07-01T00:00:00Z'}
            """))
        assert problems(loaded) == [("spec.autoReply", "end must be after start")]

    def test_catch_all_must_be_in_the_domain_and_be_a_mailbox(self, tmp_path):
        outside = load(tmp_path, "catchAll: ana@elsewhere.org\n", mailbox("ana"))
        assert problems(outside) == [("spec.catchAll", "catchAll must be an address of the domain or of one of "
                                                        "its alias domains")]
        nobody = load(tmp_path, "catchAll: nobody@example.com\n", mailbox("ana"))
        ((fld, msg),) = problems(nobody)
        assert fld == "spec.catchAll" and "no Mailbox" in msg

    def test_the_delimiter_takes_only_delimiter_characters(self, tmp_path):
        assert problems(load(tmp_path, "recipientDelimiter: '+-'\n", mailbox("ana"))) == []
        ((fld, _),) = problems(load(tmp_path, "recipientDelimiter: '@'\n", mailbox("ana")))
        assert fld == "spec.recipientDelimiter"


class TestRender:
    def rendered(self, loaded: loading.Loaded, previous=None):
        domain = loaded.maildomains()[0]
        objects = render.render(domain, loaded.mailboxes_of(domain), loaded.secrets_in("default"),
                                previous_scripts=previous)
        cm = next(o for o in objects if o["kind"] == "ConfigMap")
        secret = next(o for o in objects if o["kind"] == "Secret")
        import base64
        text = base64.b64decode(secret["data"][cfgmod.DIRECTORY_FILE]).decode()
        return cfgmod.parse(cm["data"][cfgmod.CONFIG_FILE]), dirmod.parse(text), text

    def test_domain_settings_reach_correo_yaml(self, tmp_path):
        loaded = load(tmp_path, "catchAll: ana@example.net\nrecipientDelimiter: '+-'\n", mailbox("ana"))
        cfg, _, _ = self.rendered(loaded)
        (dom,) = cfg.domains
        assert (dom.catch_all, dom.recipient_delimiter) == ("ana@example.com", "+-")  # the canonical address

    def test_mailbox_rules_reach_the_directory(self, tmp_path):
        loaded = load(tmp_path, "", mailbox("ana", """\
            sieve: 'keep;'
            autoReply: {body: Away., intervalDays: 3, extraAddresses: [Ana@Old.example]}
            """), mailbox("bob", "autoReply: {body: Away., enabled: false}\n"))
        _, directory, _ = self.rendered(loaded)
        ana, bob = directory.lookup("ana@example.com"), directory.lookup("bob@example.com")
        assert ana.sieve == "keep;"
        assert ana.auto_reply == dirmod.AutoReply(body="Away.", interval_days=3, extra_addresses=("ana@old.example",))
        assert bob.auto_reply is None and bob.sieve is None  # disabled: not in force

    def test_a_broken_script_keeps_the_previous_valid_one(self, tmp_path):
        good = load(tmp_path, "", mailbox("ana", "sieve: 'discard;'\n"))
        _, _, live_text = self.rendered(good)
        broken = load(tmp_path, "", mailbox("ana", "sieve: 'discrad;'\n"))
        previous = mailrules.scripts_in_directory(live_text)
        assert previous == {"ana@example.com": "discard;"}
        _, directory, _ = self.rendered(broken, previous)
        assert directory.lookup("ana@example.com").sieve == "discard;"
        fixed = load(tmp_path, "", mailbox("ana", "sieve: 'keep;'\n"))
        assert self.rendered(fixed, previous)[1].lookup("ana@example.com").sieve == "keep;"

    def test_a_first_script_that_is_broken_runs_nothing(self, tmp_path):
        broken = load(tmp_path, "", mailbox("ana", "sieve: 'discrad;'\n"))
        assert self.rendered(broken, {})[1].lookup("ana@example.com").sieve is None

    def test_rendering_stays_deterministic(self, tmp_path):
        loaded = load(tmp_path, "catchAll: ana@example.com\n", mailbox("ana", "autoReply: {body: x}\n"))
        assert self.rendered(loaded)[2] == self.rendered(loaded)[2]
        auto = yaml.safe_load(self.rendered(loaded)[2])["mailboxes"][0]["autoReply"]
        assert (auto["body"], auto["intervalDays"]) == ("x", 7)
