"""IMAP4rev1 (RFC 3501) with IDLE, UIDPLUS, MOVE, NAMESPACE, LITERAL+,
SPECIAL-USE, ENABLE, ID, QUOTA, UNSELECT, CHILDREN, CONDSTORE, LIST-EXTENDED
and LIST-STATUS, over the mailstore's storage (:mod:`..store`).

Modules, bottom up: :mod:`.utf7` (mailbox name encoding), :mod:`.responses`
(output exactly per the RFC grammar), :mod:`.parser` (each command parsed
from a complete buffer; no I/O), :mod:`.envelope` and :mod:`.bodystructure`
(from :mod:`..message`), :mod:`.fetch`, :mod:`.search`, :mod:`.states`
(connection states as classes and the selected folder's view),
:mod:`.session` (command handlers) and :mod:`.server` (sockets, TLS,
literals, timeouts: the only module doing I/O).  The service calls
:func:`.server.serve_imap`.
"""
