"""POP3 (RFC 1939 with CAPA, STLS and SASL PLAIN) for the mailstore.

``commands`` parses lines, ``multiline`` dot-stuffs replies, ``maildrop`` is
the numbered INBOX snapshot of one session, ``states`` the AUTHORIZATION /
TRANSACTION / UPDATE state machine, ``backend`` connects the states to the
store and the directory, and ``server`` is the socket loop:
``serve_pop3(ctx, listen, implicit_tls=...)``.
"""
