"""The relay as `correo serve` runs it: on uvloop (serve.py), whose
transports differ from asyncio's where it matters to relay.connection
(STARTTLS through loop.start_tls, implicit TLS, writes after a close,
backpressure).  The flows most tied to the event loop run here again."""
from __future__ import annotations

from test_relay_connection import (  # noqa: F401 - collected again, on uvloop (conftest.py)
    test_a_client_that_closes_mid_message_ends_the_transfer_at_once,
    test_a_client_that_does_not_read_its_replies_stops_being_read,
    test_garbage_cut_anywhere_gets_well_formed_replies_and_the_relay_stays_up)
from test_relay_real_clients import (  # noqa: F401
    test_aiosmtplib_starttls_and_implicit_tls, test_swaks_implicit_tls_and_pipelining, test_swaks_starttls_auth)
from test_relay_submission import (  # noqa: F401
    test_commands_pipelined_behind_starttls_are_discarded, test_sasl_exchanges, test_smtps_implicit_tls,
    test_starttls_then_auth)


async def test_the_loop_under_the_relay_is_uvloop():
    import asyncio

    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
