"""MTA-STS policy files and TXT records as RFC 8461 writes them: what correo
publishes parses, what receivers publish is read strictly, MX patterns match
one label, and the cached policy is used, refreshed or dropped as section 5.1
says."""
from __future__ import annotations

import pytest

from correo_server.mtasts import policy as pol
from correo_server.mtasts.decide import FETCH, NO_POLICY, USE_CACHED, Applied, next_step


class TestPublished:
    def test_render_writes_the_fields_in_order_with_crlf_lines(self):
        text = pol.render("enforce", 604800, ["mail.example.com", "*.backup.example.net"])
        assert text == ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.backup.example.net\r\n"
                        "max_age: 604800\r\n")
        assert pol.parse(text) == pol.Policy("enforce", 604800, ("mail.example.com", "*.backup.example.net"))

    def test_the_id_changes_exactly_when_the_policy_does(self):
        a = pol.render("testing", 86400, ["mail.example.com"])
        assert pol.policy_id(a) == pol.policy_id(pol.render("testing", 86400, ["MAIL.example.com."]))
        ids = {pol.policy_id(pol.render(m, age, mx)) for m, age, mx in [
            ("testing", 86400, ["mail.example.com"]), ("enforce", 86400, ["mail.example.com"]),
            ("testing", 86401, ["mail.example.com"]), ("testing", 86400, ["mx.example.com"])]}
        assert len(ids) == 4
        assert all(len(i) == 24 and i.isalnum() for i in ids)
        assert pol.parse_txt([pol.txt_record(a)]) == pol.policy_id(a)

    @pytest.mark.parametrize("mode, age, mx", [("strict", 1, ["a.example"]), ("testing", 31557601, ["a.example"]),
                                               ("testing", 1, ["not a host"]), ("testing", 1, ["**.example"])])
    def test_render_refuses_what_would_not_parse(self, mode, age, mx):
        with pytest.raises(pol.PolicyError):
            pol.render(mode, age, mx)


class TestParse:
    def test_lf_lines_extensions_and_whitespace_are_accepted(self):
        text = "version: STSv1\nmode:testing\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400   \nx-note: hi\n"
        assert pol.parse(text) == pol.Policy("testing", 86400, ("mail.example.com", "*.example.net"))

    def test_max_age_is_capped_at_a_year(self):
        assert pol.parse("version: STSv1\nmode: none\nmax_age: 9999999999\n").max_age == pol.MAX_AGE_LIMIT

    @pytest.mark.parametrize("text, why", [
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
        ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "STSv2"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "strict"),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "-1"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "names no mx"),
        ("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", "MX pattern"),
        ("version: STSv1\r\rmode: enforce\nmx: a.example\nmax_age: 1\n", "bare CR"),
        ("<html>policy</html>\n", "expected 'name: value'"),
        ("", "empty"),
    ])
    def test_malformed_policies_are_refused_with_a_reason(self, text, why):
        with pytest.raises(pol.PolicyError, match=why):
            pol.parse(text)

    def test_an_oversized_policy_is_refused(self):
        with pytest.raises(pol.PolicyError, match="larger"):
            pol.parse("version: STSv1\nmode: none\nmax_age: 1\n" + "x: y\n" * 20000)


class TestTxt:
    @pytest.mark.parametrize("strings, expected", [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=abc; ext=1"], "abc"),
        (["v=spf1 -all"], None),
        ([], None),
    ])
    def test_the_one_sts_record_gives_the_id(self, strings, expected):
        assert pol.parse_txt(strings) == expected

    @pytest.mark.parametrize("strings", [["v=STSv1; id=a", "v=STSv1; id=b"], ["v=STSv1; id=no-dashes"],
                                         ["v=STSv1; ext=1"], ["v=STSv1; id=" + "a" * 33], ["v=STSv1; id"]])
    def test_two_records_or_a_malformed_one_count_as_none(self, strings):
        with pytest.raises(pol.PolicyError):
            pol.parse_txt(strings)


@pytest.mark.parametrize("pattern, host, ok", [
    ("mail.example.com", "mail.example.com", True), ("mail.example.com", "MAIL.Example.com.", True),
    ("mail.example.com", "mx.example.com", False), ("*.example.com", "mx1.example.com", True),
    ("*.example.com", "a.b.example.com", False), ("*.example.com", "example.com", False),
    ("*.example.com", "mx1.example.net", False)])
def test_mx_patterns_match_one_leftmost_label(pattern, host, ok):
    assert pol.mx_matches(pattern, host) is ok


class TestNextStep:
    cached = Applied("example.org", pol.Policy("enforce", 100, ("mx.example.org",)), "v1", fetched_at=1000.0)

    @pytest.mark.parametrize("cached, announced, now, action", [
        (None, None, 1000, NO_POLICY),  # no record, nothing cached
        (None, "v1", 1000, FETCH),  # first sight
        (cached, "v1", 1050, USE_CACHED),  # current
        (cached, "v2", 1050, FETCH),  # a new policy is announced
        (cached, "v1", 1100, FETCH),  # expired: fetch again
        (cached, None, 1050, USE_CACHED),  # the record went (or DNS failed): the policy stays until max_age
        (cached, None, 1100, NO_POLICY),  # ...and no longer
    ])
    def test_cached_fetched_or_none(self, cached, announced, now, action):
        assert next_step(cached, announced, now)[0] == action
