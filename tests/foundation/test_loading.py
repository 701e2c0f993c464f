"""Loading resources from YAML: examples pass, broken resources fail with the
file, the document and the field named, and every error is reported."""
from __future__ import annotations

import textwrap

import pytest

from correo_operator import loading


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


DOMAIN = """\
apiVersion: correo.dev/v1alpha1
kind: MailDomain
metadata:
  name: example-com
spec:
  domain: example.com
"""


def mailbox(address="bob@example.com", extra=""):
    return textwrap.dedent(f"""\
    apiVersion: correo.dev/v1alpha1
    kind: Mailbox
    metadata:
      name: bob
    spec:
      address: {address}
      passwordSecretRef:
        name: bob-password
    """) + extra


SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: bob-password
stringData:
  password: hunter2
"""


@pytest.mark.parametrize("example", ["quickstart", "production"])
def test_every_example_is_valid(examples_dir, example):
    loaded = loading.load_paths([str(examples_dir / example)])
    assert loaded.errors == []
    assert loaded.domains and loaded.mailboxes


def test_the_examples_folder_loads_as_a_whole(examples_dir):
    loaded = loading.load_paths([str(examples_dir)])
    assert loaded.errors == []
    assert {d.obj["spec"]["domain"] for d in loaded.domains} == {"example.com", "acme.test"}


def test_multi_document_files_and_folders(tmp_path):
    write(tmp_path, "all.yaml", DOMAIN + "---\n" + mailbox() + "---\n" + SECRET)
    loaded = loading.load_paths([str(tmp_path)])
    assert loaded.errors == []
    assert [d.name for d in loaded.mailboxes] == ["bob"]
    assert loaded.mailboxes[0].index == 2
    assert ("default", "bob-password") in loaded.secrets


def test_defaults_from_the_schema_are_filled_in(tmp_path):
    write(tmp_path, "d.yaml", DOMAIN)
    spec = loading.load_paths([str(tmp_path)]).domains[0].obj["spec"]
    assert spec["relay"]["replicas"] == 2
    assert spec["queue"]["storage"]["size"] == "5Gi"
    assert spec["mailstore"]["imap"] is True


def errors_for(tmp_path, *docs):
    write(tmp_path, "bad.yaml", "---\n".join(docs))
    return [str(e) for e in loading.load_paths([str(tmp_path / "bad.yaml")]).errors]


def the_error(errors, field):
    hits = [e for e in errors if f": {field}: " in e]
    assert hits, f"no error for {field} in {errors}"
    assert "bad.yaml" in hits[0] and "document" in hits[0]
    return hits[0]


def test_missing_address_names_the_field(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox().replace("  address: bob@example.com\n", ""), SECRET)
    assert "required" in the_error(errors, "spec.address")


def test_bad_domain_names_the_field(tmp_path):
    errors = errors_for(tmp_path, DOMAIN.replace("example.com", "Not_A_Domain"))
    assert "not a valid domain name" in the_error(errors, "spec.domain")


def test_warn_after_not_before_give_up_is_rejected_by_the_cel_rule(tmp_path):
    doc = DOMAIN + "  queue:\n    retry:\n      warnAfterSeconds: 600\n      giveUpAfterSeconds: 600\n"
    errors = errors_for(tmp_path, doc)
    assert "giveUpAfterSeconds must be greater than warnAfterSeconds" in the_error(
        errors, "spec.queue.retry.giveUpAfterSeconds")


def test_small_retry_values_are_accepted_so_tests_can_watch_the_cycle(tmp_path):
    doc = DOMAIN + "  queue:\n    retry:\n      warnAfterSeconds: 2\n      giveUpAfterSeconds: 5\n"
    assert errors_for(tmp_path, doc) == []


def test_unknown_field_is_an_error(tmp_path):
    errors = errors_for(tmp_path, DOMAIN + "  replicaz: 3\n")
    assert 'unknown field "replicaz"' in the_error(errors, "spec.replicaz")


def test_wrong_type_is_an_error(tmp_path):
    errors = errors_for(tmp_path, DOMAIN + "  relay:\n    replicas: three\n")
    assert "expected integer" in the_error(errors, "spec.relay.replicas")


def test_invalid_address_is_rejected(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox("bob smith@example.com"), SECRET)
    assert "mail address" in the_error(errors, "spec.address")


def test_alias_domain_equal_to_the_domain_is_rejected(tmp_path):
    errors = errors_for(tmp_path, DOMAIN + "  aliasDomains: [example.com]\n")
    assert "alias domain must differ" in the_error(errors, "spec.aliasDomains")


def test_mailbox_outside_every_maildomain_is_rejected(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox("bob@elsewhere.org"), SECRET)
    assert "elsewhere.org is not the domain" in the_error(errors, "spec.address")


def test_alias_in_a_foreign_domain_is_rejected(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox(extra="  aliases: [boss@bank.example]\n"), SECRET)
    assert "not in example.com" in the_error(errors, "spec.aliases[0]")


def test_the_same_address_twice_is_rejected(tmp_path):
    other = mailbox().replace("name: bob", "name: bob2")
    errors = errors_for(tmp_path, DOMAIN, mailbox(), other, SECRET)
    assert "also claimed" in the_error(errors, "spec.address")


def test_all_errors_are_reported_not_only_the_first(tmp_path):
    bad_domain = DOMAIN.replace("example.com", "BAD") + "  relay:\n    replicas: many\n  colour: blue\n"
    errors = errors_for(tmp_path, bad_domain, mailbox("nope"), SECRET)
    fields = {e.split(": ")[1] for e in errors}
    assert {"spec.domain", "spec.relay.replicas", "spec.colour", "spec.address"} <= fields


def test_missing_password_secret_is_a_warning_not_an_error(tmp_path):
    write(tmp_path, "d.yaml", DOMAIN + "---\n" + mailbox())
    loaded = loading.load_paths([str(tmp_path)])
    assert loaded.errors == []
    assert any("bob-password" in str(w) for w in loaded.warnings)


def test_secret_without_the_referenced_key_is_an_error(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox(), SECRET.replace("password:", "pw:"))
    assert "no key 'password'" in the_error(errors, "spec.passwordSecretRef.key")


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    write(tmp_path, "broken.yaml", "kind: [unclosed\n")
    (problem,) = loading.load_paths([str(tmp_path)]).errors
    assert "broken.yaml:" in str(problem) and "not valid YAML" in str(problem)


def test_a_missing_path_is_an_error(tmp_path):
    (problem,) = loading.load_paths([str(tmp_path / "nope")]).errors
    assert "no such file" in str(problem)


def test_other_kinds_are_left_for_kubectl(tmp_path):
    write(tmp_path, "c.yaml", DOMAIN + "---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\n")
    loaded = loading.load_paths([str(tmp_path)])
    assert loaded.errors == [] and [d.kind for d in loaded.other] == ["Certificate"]


def test_an_empty_password_is_an_error_not_an_open_mailbox(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox(), SECRET.replace("password: hunter2", 'password: ""'))
    assert "is empty" in the_error(errors, "spec.passwordSecretRef")


def test_a_mangled_hash_is_an_error(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox(), SECRET.replace("hunter2", "'{BCRYPT}garbage'"))
    assert "not a valid" in the_error(errors, "spec.passwordSecretRef")


def test_bad_base64_in_secret_data_says_so(tmp_path):
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: bob-password}\ndata: {password: 'abc'}\n"
    errors = errors_for(tmp_path, DOMAIN, mailbox(), secret)
    assert "not valid base64" in the_error(errors, "data.password")


@pytest.mark.parametrize("kind", ["MailBox", "Mailbx", "MailDomains"])
def test_a_typo_in_kind_is_an_error_not_a_silent_skip(tmp_path, kind):
    errors = errors_for(tmp_path, DOMAIN, mailbox().replace("kind: Mailbox", f"kind: {kind}"), SECRET)
    assert "no kind" in the_error(errors, "kind")


def test_a_document_without_apiversion_is_an_error(tmp_path):
    errors = errors_for(tmp_path, DOMAIN.replace("apiVersion: correo.dev/v1alpha1\n", ""))
    assert "required" in the_error(errors, "apiVersion")


def test_an_alias_domain_served_elsewhere_names_the_alias_field_and_the_first_owner(tmp_path):
    other = DOMAIN.replace("name: example-com", "name: other").replace("domain: example.com",
                                                                         "domain: other.test\n  aliasDomains: [example.com]")
    errors = errors_for(tmp_path, DOMAIN, other)
    message = the_error(errors, "spec.aliasDomains[0]")
    assert "MailDomain default/other" in message.split(": ")[0] and "(document 1, MailDomain default/example-com)" in message


def test_an_invalid_address_is_reported_once(tmp_path):
    errors = errors_for(tmp_path, DOMAIN, mailbox("not-an-address"), SECRET)
    assert len([e for e in errors if ": spec.address: " in e]) == 1
