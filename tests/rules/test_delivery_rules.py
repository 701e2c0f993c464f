"""Mail rules at final delivery, as the queue sees them over LMTP and the
owner sees them in the store: filing, subaddress folders, redirects,
rejects, auto-replies once per sender per interval, errors that keep mail."""
from __future__ import annotations

import json

from correo_server.directory import AutoReply
from correo_server.mailstore.managesieve.storage import ScriptStorage
from rules_support import ANA, BOB, entries, message

DAY = 86400


def _actions(store, action):
    return store.metric("mailstore_sieve_actions_total", action=action)


class TestFiling:
    async def test_an_admin_fileinto_rule_files_the_message_and_keeps_the_rest_in_inbox(self, start):
        store = await start(entries(sieve='require "fileinto";\n'
                                          'if header :contains "subject" "[news]" { fileinto "News"; }\n'))
        await store.create_folder(ANA, "News")
        (filed,) = await store.lmtp("carol@elsewhere.org", [ANA], message("[news] weekly"))
        (kept,) = await store.lmtp("carol@elsewhere.org", [ANA], message("lunch?"))
        assert filed.ok and kept.ok
        assert [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in await store.folder(ANA, "News")] == [
            b"[news] weekly"]
        assert [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in await store.folder(ANA, "INBOX")] == [b"lunch?"]
        assert _actions(store, "fileinto") == 1 and _actions(store, "keep") == 1

    async def test_fileinto_create_makes_the_folder_and_flags_are_set(self, start):
        store = await start(entries(sieve='require ["fileinto", "mailbox", "imap4flags"];\n'
                                          'fileinto :create :flags ["\\\\Flagged", "$work"] "Projects/Atlas";\n'))
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("status"))
        assert reply.ok
        assert len(await store.folder(ANA, "Projects/Atlas")) == 1
        assert await store.flags(ANA, "Projects/Atlas") == [frozenset({"\\Flagged", "$work"})]
        assert await store.folder(ANA, "INBOX") == []

    async def test_fileinto_a_missing_folder_keeps_the_mail_in_inbox_and_says_so(self, start):
        store = await start(entries(sieve='require "fileinto";\nfileinto "Nowhere";\n'))
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("lost?"))
        assert reply.ok
        assert len(await store.folder(ANA, "INBOX")) == 1
        status = await store.service.status_document()
        rules = status["mailboxes"][ANA]["rules"]
        assert rules["errors"] == 1 and "Nowhere" in rules["lastError"]["message"]
        assert store.metric("mailstore_sieve_errors_total", script="delivery", kind="folder") == 1

    async def test_the_users_active_script_runs_after_the_admins(self, start):
        store = await start(entries(sieve='require "imap4flags";\naddflag "$checked";\n'))
        storage = ScriptStorage.for_mailbox(store.ctx.store.data_dir, ANA)
        storage.put("mine", b'require "fileinto";\nif address :is "from" "carol@elsewhere.org" '
                            b'{ fileinto "Carol"; }\n')
        storage.set_active("mine")
        await store.create_folder(ANA, "Carol")
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("from carol"))
        assert reply.ok
        assert len(await store.folder(ANA, "Carol")) == 1
        status = await store.service.status_document()
        assert status["mailboxes"][ANA]["rules"] == {"adminScript": True, "autoReply": False, "errors": 0,
                                                     "userScript": "mine"}

    async def test_an_admin_script_that_files_the_message_ends_the_sequence(self, start):
        store = await start(entries(sieve='require "fileinto";\nif header :contains "subject" "spam" '
                                          '{ fileinto "Junk"; }\n'))
        storage = ScriptStorage.for_mailbox(store.ctx.store.data_dir, ANA)
        storage.put("mine", b'discard;\n')
        storage.set_active("mine")
        await store.lmtp("carol@elsewhere.org", [ANA], message("cheap spam"))
        await store.lmtp("carol@elsewhere.org", [ANA], message("real mail"))
        assert len(await store.folder(ANA, "Junk")) == 1  # the admin's rule; the user's discard never ran on it
        assert await store.folder(ANA, "INBOX") == []  # the user's script discarded the other


class TestSubaddress:
    async def test_a_subaddress_files_into_the_folder_of_that_name(self, start):
        store = await start(entries())
        await store.create_folder(ANA, "news")
        (reply,) = await store.lmtp("list@elsewhere.org", ["ana+news@example.com"], message("issue 12"))
        assert reply.ok
        assert len(await store.folder(ANA, "news")) == 1 and await store.folder(ANA, "INBOX") == []

    async def test_case_of_the_folder_does_not_matter_and_a_missing_folder_means_inbox(self, start):
        store = await start(entries())
        await store.create_folder(ANA, "Receipts")
        await store.lmtp("shop@elsewhere.org", ["ana+receipts@example.com"], message("order 1"))
        await store.lmtp("shop@elsewhere.org", ["ana+unknown@example.com"], message("order 2"))
        assert len(await store.folder(ANA, "Receipts")) == 1
        assert len(await store.folder(ANA, "INBOX")) == 1

    async def test_a_stranger_cannot_plant_mail_among_sent_or_drafts(self, start):
        store = await start(entries())
        await store.lmtp("evil@elsewhere.org", ["ana+Sent@example.com"], message("fake sent"))
        await store.lmtp("evil@elsewhere.org", ["ana+drafts@example.com"], message("fake draft"))
        assert await store.folder(ANA, "Sent") == [] and await store.folder(ANA, "Drafts") == []
        assert len(await store.folder(ANA, "INBOX")) == 2

    async def test_the_domains_delimiter_is_used(self, start):
        store = await start(entries(), recipient_delimiter="-")
        await store.create_folder(ANA, "lists")
        replies = await store.lmtp("x@elsewhere.org", ["ana-lists@example.com", "ana+lists@example.com"],
                                   message("which"))
        assert replies[0].ok and replies[1].code == 550  # "+" is no delimiter here: unknown address
        assert len(await store.folder(ANA, "lists")) == 1

    async def test_sieve_sees_the_detail_in_the_envelope(self, start):
        store = await start(entries(sieve='require ["envelope", "subaddress", "fileinto", "mailbox"];\n'
                                          'if envelope :detail "to" "shop" { fileinto :create "Shopping"; }\n'))
        await store.lmtp("x@elsewhere.org", ["ana+shop@example.com"], message("receipt"))
        assert len(await store.folder(ANA, "Shopping")) == 1


class TestCatchAll:
    async def test_unknown_addresses_reach_the_catch_all_mailbox(self, start):
        store = await start(entries(), catch_all=BOB)
        replies = await store.lmtp("x@elsewhere.org", ["whoever@example.com", "someone@example.net"],
                                   message("hello stranger"))
        assert [r.ok for r in replies] == [True, True]
        assert len(await store.folder(BOB, "INBOX")) == 1  # one copy for one mailbox

    async def test_without_a_catch_all_unknown_addresses_are_refused(self, start):
        store = await start(entries())
        (reply,) = await store.lmtp("x@elsewhere.org", ["whoever@example.com"], message("hello"))
        assert reply.code == 550 and reply.status == "5.1.1"

    async def test_the_catch_all_mailboxs_rules_see_which_address_was_used(self, start):
        mailboxes = entries()
        mailboxes[1] = mailboxes[1].__class__(BOB, name="bob", sieve=(
            'require ["envelope", "fileinto", "mailbox"];\n'
            'if envelope :localpart :is "to" "sales" { fileinto :create "Sales"; }\n'))
        store = await start(mailboxes, catch_all=BOB)
        await store.lmtp("x@elsewhere.org", ["sales@example.com"], message("quote please"))
        assert len(await store.folder(BOB, "Sales")) == 1


class TestRedirectRejectDiscard:
    async def test_a_redirect_goes_to_the_queue_with_the_original_sender(self, start, queue):
        store = await start(entries(sieve='redirect "ana@home.example";\n'))
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("forward me"))
        assert reply.ok and reply.code == 250
        (sent,) = queue.received
        assert sent.sender == "carol@elsewhere.org" and sent.recipients == ["ana@home.example"]
        assert sent.data.startswith(b"Received: by mail.example.com (correo sieve redirect)")
        assert b"Return-Path:" not in sent.data and b"Subject: forward me" in sent.data
        assert await store.folder(ANA, "INBOX") == []

    async def test_a_redirect_the_queue_cannot_take_fails_the_delivery_for_a_retry(self, start, queue):
        store = await start(entries(sieve='require "copy";\nredirect :copy "ana@home.example";\n'))
        queue.refuse = True
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("try later"))
        assert reply.code == 451
        assert await store.folder(ANA, "INBOX") == []  # nothing stored: the retry delivers it once
        queue.refuse = False
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("try later"))
        assert reply.ok and len(await store.folder(ANA, "INBOX")) == 1 and len(queue.received) == 1

    async def test_a_redirect_to_the_mailbox_itself_is_kept_not_looped(self, start, queue):
        store = await start(entries(sieve='redirect "anita@example.com";\n'))
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("loop?"))
        assert reply.ok and queue.received == [] and len(await store.folder(ANA, "INBOX")) == 1

    async def test_reject_refuses_at_the_protocol_level(self, start):
        store = await start(entries(sieve='require "reject";\nif header :contains "subject" "offer" '
                                          '{ reject "No offers, thank you."; }\n'))
        (reply,) = await store.lmtp("spam@elsewhere.org", [ANA], message("great offer"))
        assert (reply.code, reply.status) == (550, "5.7.1") and "No offers, thank you." in reply.text
        assert await store.folder(ANA, "INBOX") == []

    async def test_reject_with_non_ascii_text_sends_a_notice_instead(self, start, queue):
        store = await start(entries(sieve='require "reject";\nreject "Non merci — pas de publicité.";\n'))
        (reply,) = await store.lmtp("spam@elsewhere.org", [ANA], message("pub"))
        assert reply.ok
        (notice,) = queue.received
        assert notice.sender == "" and notice.recipients == ["spam@elsewhere.org"]
        assert b"Auto-Submitted: auto-replied" in notice.data and b"disposition-notification" in notice.data

    async def test_discard_stores_nothing_and_accepts(self, start):
        store = await start(entries(sieve='if header :contains "subject" "noise" { discard; }\n'))
        (reply,) = await store.lmtp("x@elsewhere.org", [ANA], message("noise"))
        assert reply.code == 250 and "discarded" in reply.text
        assert await store.folder(ANA, "INBOX") == []
        assert _actions(store, "discard") == 1


class TestAutoReply:
    AUTO = AutoReply(body="I am away until Monday.", subject="Away", interval_days=7)

    async def test_one_reply_per_sender_per_interval(self, start, queue, clock):
        store = await start(entries(auto_reply=self.AUTO))
        for i in range(3):
            assert (await store.lmtp("carol@elsewhere.org", [ANA], message(f"ping {i}")))[0].ok
        await store.lmtp("dan@elsewhere.org", [ANA], message("hello", sender="dan@elsewhere.org"))
        assert [(s.sender, s.recipients) for s in queue.received] == [
            ("", ["carol@elsewhere.org"]), ("", ["dan@elsewhere.org"])]
        reply = queue.received[0].data
        assert b"Auto-Submitted: auto-replied" in reply and b"Subject: Away" in reply
        assert b"I am away until Monday." in reply and b"In-Reply-To: <" in reply
        clock.advance(6 * DAY)
        await store.lmtp("carol@elsewhere.org", [ANA], message("still there?"))
        assert len(queue.received) == 2
        clock.advance(1 * DAY + 1)
        await store.lmtp("carol@elsewhere.org", [ANA], message("a week later"))
        assert [s.recipients for s in queue.received][-1] == ["carol@elsewhere.org"] and len(queue.received) == 3
        assert len(await store.folder(ANA, "INBOX")) == 6  # every message is kept
        assert store.metric("mailstore_sieve_vacation_total", result="AlreadyReplied") == 3

    async def test_the_record_of_who_had_a_reply_is_on_the_mailstore_volume(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO))
        await store.lmtp("carol@elsewhere.org", [ANA], message("first"))
        tracking = store.ctx.store.data_dir / ANA / "correo-sieve" / "tracking.json"
        doc = json.loads(tracking.read_text())
        assert len(doc["entries"]) == 1 and "carol" not in tracking.read_text()  # hashed, never in clear

    async def test_no_reply_to_lists_bulk_automatic_mail_or_the_null_sender(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO))
        await store.lmtp("chat@lists.example.org", [ANA],
                         message("digest", extra="List-Id: <chat.lists.example.org>\r\n"))
        await store.lmtp("news@elsewhere.org", [ANA], message("promo", extra="Precedence: bulk\r\n"))
        await store.lmtp("bot@elsewhere.org", [ANA], message("robot", extra="Auto-Submitted: auto-generated\r\n"))
        await store.lmtp("", [ANA], message("bounce", sender="mailer-daemon@elsewhere.org"))
        await store.lmtp("carol@elsewhere.org", [ANA], message("bcc'd", to="someone@elsewhere.org"))
        assert queue.received == []
        assert len(await store.folder(ANA, "INBOX")) == 5
        for reason in ("MailingList", "BulkPrecedence", "AutoSubmitted", "NullSender", "NotAddressedToMe"):
            assert store.metric("mailstore_sieve_vacation_total", result=reason) == 1, reason

    async def test_no_reply_to_mail_from_the_mailbox_itself(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO))
        await store.lmtp("anita@example.com", [ANA], message("note to self", sender="anita@example.com"))
        assert queue.received == []

    async def test_outside_its_window_it_does_not_reply(self, start, queue, clock):
        auto = AutoReply(body="Away.", start="2027-02-01T00:00:00Z", end="2027-02-08T00:00:00Z")
        store = await start(entries(auto_reply=auto))
        await store.lmtp("carol@elsewhere.org", [ANA], message("too early"))  # clock: 2027-01-15
        assert queue.received == []
        assert (await store.service.status_document())["mailboxes"][ANA]["rules"]["autoReply"] is False
        clock.now = 1_801_900_000.0  # 2027-02-03
        await store.lmtp("carol@elsewhere.org", [ANA], message("now"))
        assert len(queue.received) == 1
        assert (await store.service.status_document())["mailboxes"][ANA]["rules"]["autoReply"] is True

    async def test_it_answers_mail_a_rule_filed_but_not_spam(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO, sieve=(
            'require "fileinto";\n'
            'if header :contains "subject" "invoice" { fileinto "Billing"; }\n'
            'elsif header :contains "subject" "viagra" { fileinto "Junk"; }\n')))
        await store.create_folder(ANA, "Billing")
        await store.lmtp("carol@elsewhere.org", [ANA], message("invoice 7"))
        await store.lmtp("spammer@elsewhere.org", [ANA], message("viagra", sender="spammer@elsewhere.org"))
        assert [s.recipients for s in queue.received] == [["carol@elsewhere.org"]]

    async def test_a_users_own_vacation_wins_over_the_auto_reply(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO))
        storage = ScriptStorage.for_mailbox(store.ctx.store.data_dir, ANA)
        storage.put("ooo", b'require "vacation";\nvacation :subject "Mine" "My own words.";\n')
        storage.set_active("ooo")
        await store.lmtp("carol@elsewhere.org", [ANA], message("hi"))
        (reply,) = queue.received
        assert b"Subject: Mine" in reply.data and b"My own words." in reply.data

    async def test_a_reply_the_queue_cannot_take_is_tried_again_with_the_next_message(self, start, queue):
        store = await start(entries(auto_reply=self.AUTO))
        queue.refuse = True
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("one"))
        assert reply.ok  # the mail itself is delivered
        queue.refuse = False
        await store.lmtp("carol@elsewhere.org", [ANA], message("two"))
        assert len(queue.received) == 1
        assert store.metric("mailstore_sieve_errors_total", script="delivery", kind="submit") == 1


class TestErrors:
    async def test_a_script_that_fails_at_run_time_keeps_the_message_and_is_counted(self, start):
        # Two rejects of one message conflict (RFC 5429): a run-time error.
        store = await start(entries(sieve='require ["reject", "fileinto"];\nfileinto "INBOX";\n'
                                          'reject "no";\n'))
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("conflict"))
        assert reply.ok
        assert len(await store.folder(ANA, "INBOX")) == 1
        rules = (await store.service.status_document())["mailboxes"][ANA]["rules"]
        assert rules["errors"] == 1 and rules["lastError"]["script"] == "spec.sieve"
        assert "line" in rules["lastError"]["message"]
        assert sum(store.metric("mailstore_sieve_errors_total", script="admin", kind=k)
                   for k in ("conflict", "error", "limit")) == 1

    async def test_a_user_script_that_no_longer_compiles_is_skipped_and_reported(self, start):
        store = await start(entries())
        storage = ScriptStorage.for_mailbox(store.ctx.store.data_dir, ANA)
        storage.put("broken", b'require "fileinto";\nfileinto "A";\n')
        storage.set_active("broken")
        (storage.scripts / "broken.sieve").write_bytes(b"if true {\n")  # edited by hand on the volume
        (reply,) = await store.lmtp("carol@elsewhere.org", [ANA], message("x"))
        assert reply.ok and len(await store.folder(ANA, "INBOX")) == 1
        rules = (await store.service.status_document())["mailboxes"][ANA]["rules"]
        assert rules["lastError"]["script"] == "broken" and "does not compile" in rules["lastError"]["message"]

    async def test_mailboxes_without_rules_have_no_rules_entry(self, start):
        store = await start(entries())
        await store.lmtp("carol@elsewhere.org", [BOB], message("plain", to=BOB))
        assert "rules" not in (await store.service.status_document())["mailboxes"][BOB]


class TestScanVerdict:
    async def test_spamtest_reads_the_relays_scan(self, start):
        store = await start(entries(sieve='require ["spamtest", "fileinto", "relational", '
                                          '"comparator-i;ascii-numeric"];\n'
                                          'if spamtest :value "ge" :comparator "i;ascii-numeric" "5" '
                                          '{ fileinto "Junk"; }\n'))
        scanned = "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=9.00 required=12.00\r\nX-Spam-Action: no action\r\n"
        await store.lmtp("x@elsewhere.org", [ANA], message("suspicious", extra=scanned))
        await store.lmtp("x@elsewhere.org", [ANA], message("unscanned"))  # "0": not tested
        assert len(await store.folder(ANA, "Junk")) == 1 and len(await store.folder(ANA, "INBOX")) == 1
