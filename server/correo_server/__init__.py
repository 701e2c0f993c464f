"""correo's servers: relay (SMTP edge), queue (store-and-forward), mailstore
(Maildir, LMTP, IMAP, POP3), and what they share (configuration, directory,
passwords, TLS, logging, the HTTP side port).

Nothing here imports ``correo_operator``: the control plane sits above.
"""

__version__ = "0.1.0"
