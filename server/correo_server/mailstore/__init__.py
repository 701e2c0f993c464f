"""The mailstore: Maildir storage with an index, LMTP delivery from the queue,
and the IMAP4rev1 and POP3 servers people read their mail with."""
