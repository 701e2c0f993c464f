"""What ``correo up`` writes comes from the operator's renderer; several
MailDomains make one multi-domain local stack."""
from __future__ import annotations

import argparse

import structlog

from correo_operator import loading, render
from correo_operator.local import stack, up
from correo_operator.local.layout import Layout
from correo_server import config as cfgmod
from correo_server import directory as dirmod


def test_local_config_is_the_rendered_config_moved_onto_this_machine(tmp_path, examples_dir):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    layout = Layout.at(tmp_path)
    options = stack.Options(port_base=10000)
    ports = stack.choose_ports(options)
    stack.write_config(loaded, layout, ports, options)
    cfg = cfgmod.load(layout.config)
    rendered = render.server_config(loaded.maildomains()[0])
    assert cfg.domains == rendered.domains
    assert cfg.relay.max_message_bytes == rendered.relay.max_message_bytes
    assert (cfg.relay.submission.host, cfg.relay.submission.port) == ("127.0.0.1", 12587)
    assert cfg.mailstore.data_dir == str(layout.mail) and cfg.queue.spool_dir == str(layout.spool)
    assert (layout.config / "tls" / "tls.crt").exists() and cfg.tls is not None
    assert cfg.path(cfg.domains[0].dkim_key_file).exists()
    directory = dirmod.load(layout.config, cfg)
    assert {m.address for m in directory} == {"alice@example.com", "bob@example.com"}
    assert "wonderland" not in (layout.config / "directory.yaml").read_text()


def test_rewriting_the_same_input_changes_nothing_so_servers_reload_nothing(tmp_path, examples_dir):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    layout = Layout.at(tmp_path)
    ports = stack.choose_ports(stack.Options(ephemeral=True))
    assert stack.write_config(loaded, layout, ports, stack.Options()) == (True, True)
    assert stack.write_config(loaded, layout, ports, stack.Options()) == (False, False)


def test_all_examples_make_one_multi_domain_stack(tmp_path, examples_dir):
    loaded = loading.load_paths([str(examples_dir)])
    cfg = stack.server_config(loaded, Layout.at(tmp_path), stack.choose_ports(stack.Options(ephemeral=True)),
                              stack.Options(), tls=True)
    assert [d.name for d in cfg.domains] == ["example.com", "acme.test"]
    assert cfg.domain_for("acme-corp.test").name == "acme.test"
    assert cfg.relay.max_message_bytes == 50 * 1024 * 1024  # the largest of the two
    assert cfg.mailstore.pop3_enabled  # the quickstart wants POP3 even if production does not


def test_generation_moves_only_when_the_spec_changes(examples_dir):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    first = up.generations(loaded, None)
    assert set(v["generation"] for v in first.values()) == {1}
    assert up.generations(loaded, first) == first
    loaded.mailboxes[0].obj["spec"]["quota"] = "3Gi"
    second = up.generations(loaded, first)
    changed = [k for k in second if second[k]["generation"] == 2]
    assert changed == [f"Mailbox/default/{loaded.mailboxes[0].name}"]


def test_try_it_lines_use_real_quickstart_credentials(examples_dir):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    ports = {**{n: cfgmod.DEFAULT_PORTS[n] for n in stack.PUBLIC}}
    send, read = up.try_it(loaded, ports, "127.0.0.1")
    assert send.startswith("swaks --server 127.0.0.1:2587 -tls --auth-user alice@example.com")
    assert "--auth-password 'wonderland'" in send and "--to bob@example.com" in send
    assert read == "curl -s --user 'bob@example.com:canwefixit' 'imap://127.0.0.1:2143/INBOX;MAILINDEX=1'"


def test_up_refuses_invalid_yaml_before_starting_anything(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("apiVersion: correo.dev/v1alpha1\nkind: MailDomain\nmetadata: {name: x}\n"
                                       "spec: {domain: BAD}\n")
    args = argparse.Namespace(paths=[str(tmp_path)], data=str(tmp_path / "data"), port_base=None, dns=[],
                              remote_smtp_port=None, host="127.0.0.1", log_format="console", ephemeral_ports=True)
    try:
        assert up.main(args) == 1
    finally:
        structlog.reset_defaults()  # up.main configured logging for this process: not for the tests after it
    assert "spec.domain" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_off_loopback_the_try_it_line_reads_over_tls_trusting_the_stack_certificate(examples_dir, tmp_path):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    ports = {**{n: cfgmod.DEFAULT_PORTS[n] for n in stack.PUBLIC}}
    cert = tmp_path / "tls.crt"
    _send, read = up.try_it(loaded, ports, "192.0.2.10", cert)
    assert read == f"curl -s --cacert {cert} --user 'bob@example.com:canwefixit' 'imaps://192.0.2.10:2993/INBOX;MAILINDEX=1'"


def test_the_self_signed_certificate_covers_the_listen_address(tmp_path, examples_dir):
    from correo_operator.local import keys
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    layout = Layout.at(tmp_path)
    options = stack.Options(host="192.0.2.10")
    stack.write_config(loaded, layout, stack.choose_ports(stack.Options(ephemeral=True)), options)
    names = keys.certificate_names(layout.config / "tls" / "tls.crt")
    assert {"mail.example.com", "localhost", "127.0.0.1", "192.0.2.10"} <= names


def test_hints_name_the_data_folder_unless_it_is_the_default(tmp_path):
    assert up.data_flag(Layout.at(tmp_path)) == f" --data {tmp_path.resolve()}"
    assert up.data_flag(Layout.at(".correo")) == ""


def test_a_second_up_cannot_take_the_data_folder(tmp_path):
    layout = Layout.at(tmp_path)
    layout.create()
    first = up.lock_data(layout)
    assert first is not None and up.lock_data(layout) is None
    first.close()
    assert up.lock_data(layout) is not None


def test_status_reads_what_runs_not_the_yaml_being_edited(tmp_path, examples_dir):
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    layout = Layout.at(tmp_path)
    stack.write_config(loaded, layout, stack.choose_ports(stack.Options(ephemeral=True)), stack.Options())
    applied, keys = stack.read_applied(layout)
    assert [d.name for d in applied.domains] == ["example-com"]
    assert sorted(d.name for d in applied.mailboxes) == ["alice", "bob"]
    assert keys["default"]["alice-password"] == frozenset({"password"})
    assert "wonderland" not in layout.applied_file.read_text()  # key names only, never values


def test_status_table_tells_what_needs_attention(tmp_path, examples_dir):
    from datetime import datetime, timezone

    from correo_operator.local import statuscmd
    loaded = loading.load_paths([str(examples_dir / "quickstart")])
    layout = Layout.at(tmp_path)
    stack.write_config(loaded, layout, stack.choose_ports(stack.Options(ephemeral=True)), stack.Options())
    applied, keys = stack.read_applied(layout)
    state = {"endpoints": {}, "services": {}}  # nothing answers: the queue's figures are unknown
    items = statuscmd.compute(layout, state, applied, keys, datetime.now(timezone.utc))
    text = statuscmd.table(items)
    assert "QueueUnreachable" in text
    row = next(line for line in text.splitlines() if line.startswith("default    bob"))
    assert " ? " in row  # unknown, not zero
    assert "bob@example.com: MailstoreUnavailable" in text


def test_correo_apply_and_the_watcher_of_up_may_apply_one_edit_at_once(tmp_path, examples_dir):
    """`correo apply` right after an edit races `correo up`'s own watcher:
    both rewrite the configuration and state.json.  Neither may fail (a
    shared temporary file name once made `correo up` stop with
    FileNotFoundError), and what each adds to state.json is kept."""
    import threading

    from correo_operator.local.layout import read_json, write_json

    layout = Layout.at(tmp_path)
    layout.create()
    options = stack.Options(ephemeral=True)
    ports = stack.choose_ports(options)
    write_json(layout.state_file, {"pid": 1, "ports": ports, "shards": 1})
    paths = [str(examples_dir / "quickstart")]
    loaded = loading.load_paths(paths)
    errors: list[BaseException] = []

    def apply_many():
        try:
            for _ in range(20):
                (layout.config / "directory.yaml").unlink(missing_ok=True)  # force a rewrite each time
                up.apply_once(paths, layout, options, ports, loaded)
                up._record_pids(layout, {}, {"relay": 1})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = read_json(layout.state_file)
    assert state["services"] == {"relay": 1} and state["paths"] == [str(examples_dir.resolve() / "quickstart")]
    assert state["generations"]
    assert not list(tmp_path.glob(".tmp-*")) and not list(layout.config.glob(".tmp-*"))  # no temporary file left


def test_two_writers_of_one_file_never_break_each_other(tmp_path):
    import threading

    from correo_operator.local.layout import write_atomic

    target, errors = tmp_path / "applied.json", []

    def write(n):
        try:
            for i in range(200):
                write_atomic(target, f"{n}-{i}\n")
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text().endswith("-199\n")
    assert [p.name for p in tmp_path.iterdir()] == ["applied.json"]
