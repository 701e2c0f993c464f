"""The servers' configuration format, the directory and password hashes:
what every server reads, defined once."""
from __future__ import annotations

import time

import bcrypt
import pytest

from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import guard, passwords
from correo_server.config import AuthSettings, ConfigError

def sample_config():
    return cfgmod.ServerConfig(name="x", hostname="mail.example.com", domains=(
        cfgmod.Domain("example.com", aliases=("example.net",)),))


def test_config_round_trips_through_yaml():
    cfg = sample_config()
    assert cfgmod.parse(cfgmod.dump(cfg)) == cfg


def test_config_errors_name_the_file_and_key():
    text = cfgmod.dump(sample_config()).replace("maxRecipients", "maxRecipientz")
    with pytest.raises(ConfigError, match=r"correo.yaml: relay: unknown key\(s\) maxRecipientz"):
        cfgmod.parse(text, source="correo.yaml")
    with pytest.raises(ConfigError, match="relay.maxRecipients: expected an integer"):
        cfgmod.parse(cfgmod.dump(sample_config()).replace("maxRecipients: 100", "maxRecipients: lots"))


def test_config_rejects_give_up_before_warning():
    cfg = cfgmod.ServerConfig(name="x", hostname="h", domains=(
        cfgmod.Domain("a.test", retry=cfgmod.RetryPolicy(warn_after_seconds=10, give_up_after_seconds=5)),))
    with pytest.raises(ConfigError, match="giveUpAfterSeconds"):
        cfgmod.parse(cfgmod.dump(cfg))


def test_load_says_which_folder_lacks_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        cfgmod.load(tmp_path)


def test_alias_domains_map_onto_the_domain():
    cfg = sample_config()
    assert cfg.canonical_address("Bob@EXAMPLE.NET") == "Bob@example.com"
    assert cfg.is_hosted("example.net") and not cfg.is_hosted("example.org")


def test_retry_delays_back_off_up_to_the_maximum():
    r = cfgmod.RetryPolicy(initial_delay_seconds=60, backoff_factor=2, max_delay_seconds=300)
    assert [r.delay_after(n) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 300, 300]


def directory():
    entries = [
        dirmod.MailboxEntry("alice@example.com", aliases=("postmaster@example.com",),
                            password_hash=passwords.hash_password("pw", passwords.stable_salt("a"))),
        dirmod.MailboxEntry("bob@example.com", forward_to=("bob@far.test", "carol@example.com"), keep_copy=False),
        dirmod.MailboxEntry("carol@example.com", forward_to=("bob@example.com",)),
        dirmod.MailboxEntry("dan@example.com", suspended=True,
                            password_hash=passwords.hash_password("pw", passwords.stable_salt("d"))),
    ]
    return dirmod.parse(dirmod.dump(entries), config=sample_config())


def test_directory_lookup_by_alias_alias_domain_case_and_detail():
    d = directory()
    for address in ("alice@example.com", "ALICE@example.com", "postmaster@example.com",
                    "alice@example.net", "alice+lists@example.com"):
        assert d.lookup(address).address == "alice@example.com", address
    assert d.lookup("nobody@example.com") is None


def test_sender_may_use_own_address_and_aliases_only():
    d = directory()
    alice = d.lookup("alice@example.com")
    assert d.owns(alice, "postmaster@example.net")
    assert not d.owns(alice, "bob@example.com")


def test_forwards_expand_without_loops():
    d = directory()
    exp = d.expand("bob@example.com")
    assert exp.local == ("carol@example.com",)  # bob keeps no copy; carol does and forwards back to bob
    assert exp.remote == ("bob@far.test",)
    assert d.expand("stranger@example.com") is None


def test_asking_many_addresses_gives_the_same_answers_within_a_bound(monkeypatch):
    """A snapshot remembers what it found per address (every service asks
    the same addresses several times per message), within a bound."""
    monkeypatch.setattr(dirmod, "_MEMO_ENTRIES", 8)
    d = directory()
    for i in range(50):
        assert d.recipient(f"stranger{i}@example.com") is None
        assert d.lookup("alice+lists@example.com").address == "alice@example.com"
        assert d.expand("bob@example.com").remote == ("bob@far.test",)
    assert len(d._resolved) <= 8 and len(d._expanded) <= 8


def test_suspended_mailbox_never_passes_a_password_check():
    d = directory()
    assert d.lookup("alice@example.com").check_password("pw")
    assert not d.lookup("alice@example.com").check_password("wrong")
    assert not d.lookup("dan@example.com").check_password("pw")


def test_reloading_picks_up_a_rewritten_directory(tmp_path):
    cfg = sample_config()
    (tmp_path / "directory.yaml").write_text(dirmod.dump([dirmod.MailboxEntry("a@example.com")]))
    view = dirmod.watch_directory(tmp_path, cfg, interval=0)
    assert view.get().lookup("b@example.com") is None
    time.sleep(0.01)
    (tmp_path / "directory.yaml").write_text(dirmod.dump([dirmod.MailboxEntry("b@example.com")]))
    assert view.get().lookup("b@example.com") is not None
    (tmp_path / "directory.yaml").write_text("mailboxes: [this is: broken")  # half-written file
    assert view.get().lookup("b@example.com") is not None  # the last good one stays


# Vectors from Drepper's SHA-crypt specification and from glibc's crypt(3).
SHA512_VECTORS = [
    ("Hello world!", "$6$saltstring",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "$6$rounds=10000$saltstringsaltstring",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
     "YTBmSK6H9qs/y3RnOaw5v."),
    ("", "$6$x", "$6$x$QSmr1Bx2g4O6BzKvdkgOcyU6H91X6I/XBv5pSalMhSPkwdH6Beo3F455xZJg0v//bxVK5F4OE5k1.0xuR26MK0"),
    ("\u00fc" * 100, "$6$rounds=1000$abcdefghijklmnop",
     "$6$rounds=1000$abcdefghijklmnop$7I9KDm6xXR6dnGQN2WekxUmZPOc8JRT7bmSj85TW/UzL4JHTOKzGj9ELnQjvWyHqTGPfeCWAY5E"
     "ySzMbcMorI/"),
]


@pytest.mark.parametrize("password,setting,expected", SHA512_VECTORS)
def test_sha512_crypt_matches_the_reference(password, setting, expected):
    assert passwords.sha512_crypt(password, setting) == expected


def test_all_three_hash_schemes_verify():
    sha = "{SHA512-CRYPT}" + passwords.sha512_crypt("pw", "$6$abcdefgh")
    bc = "{BCRYPT}" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    ar = passwords.hash_password("pw", passwords.stable_salt("x"))
    for stored in (sha, bc, ar, ar.removeprefix("{ARGON2ID}")):
        assert passwords.verify(stored, "pw") and not passwords.verify(stored, "px"), stored
    assert not passwords.verify("not a hash", "pw")
    assert passwords.is_hash(sha) and passwords.is_hash(bc) and not passwords.is_hash("hunter2")


def test_hashing_is_deterministic_for_a_given_salt():
    salt = passwords.stable_salt("ns", "secret", "alice@example.com")
    assert passwords.hash_password("pw", salt) == passwords.hash_password("pw", salt)
    assert passwords.hash_password("pw", salt) != passwords.hash_password("pw", passwords.stable_salt("other"))


def test_plaintext_login_only_from_loopback_by_default():
    s = AuthSettings()
    assert guard.plaintext_login_allowed(s, "127.0.0.1", tls_active=False)
    assert guard.plaintext_login_allowed(s, "::1", tls_active=False)
    assert guard.plaintext_login_allowed(s, "::ffff:127.0.0.1", tls_active=False)
    assert not guard.plaintext_login_allowed(s, "10.0.0.5", tls_active=False)
    assert guard.plaintext_login_allowed(s, "10.0.0.5", tls_active=True)
    assert not guard.plaintext_login_allowed(AuthSettings(plaintext="never"), "127.0.0.1", tls_active=False)


def test_failed_logins_cost_a_growing_delay_that_success_clears():
    now = [0.0]
    t = guard.LoginThrottle(base=1, maximum=8, clock=lambda: now[0])
    assert [t.failed("1.2.3.4") for _ in range(5)] == [1, 2, 4, 8, 8]
    assert t.failed("5.6.7.8") == 1
    t.succeeded("1.2.3.4")
    assert t.failed("1.2.3.4") == 1
    now[0] += 3600
    assert t.failed("1.2.3.4") == 1  # forgotten after a quiet while


def test_connection_gate_limits_total_and_per_client():
    g = guard.ConnectionGate(max_total=3, max_per_client=2)
    assert g.admit("a") is None and g.admit("a") is None
    assert "your address" in g.admit("a")
    assert g.admit("b") is None
    assert g.admit("c") == "too many connections"
    g.release("a")
    assert g.admit("c") is None


def test_a_broken_directory_file_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="directory.yaml: not valid YAML"):
        dirmod.parse("mailboxes: [broken", source="directory.yaml")
    with pytest.raises(ConfigError, match=r"directory.yaml: mailboxes\[0\]: unknown key"):
        dirmod.parse("mailboxes:\n- address: a@b.test\n  colour: blue\n", source="directory.yaml")
