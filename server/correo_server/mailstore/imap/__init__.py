"""IMAP4rev1 (RFC 3501) and its extensions, one module each, over the
mailstore's storage.

Modules, bottom up: :mod:`.utf7` (mailbox name encoding), :mod:`.responses`
(output exactly per the RFC grammar), :mod:`.reader` (the syntax of one
command's bytes; no I/O), :mod:`.envelope` and :mod:`.bodystructure` (from
:mod:`..message`), :mod:`.fetch` (FETCH items) and :mod:`.search` (SEARCH
keys), :mod:`.backend` (what a session needs from storage and the
directory; :mod:`.storebackend` implements it over :mod:`..store`),
:mod:`.states` (connection states as classes and the selected folder's
view), :mod:`.commands` (one module per command or extension, and the
registry the capability list is derived from), :mod:`.session` (running a
command in the right state) and :mod:`.server` (sockets, TLS, literals,
timeouts: the only module doing I/O).  The service calls
:func:`.server.serve_imap`.
"""
