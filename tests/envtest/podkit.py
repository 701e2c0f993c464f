"""What the pod tests share: a MailDomain with two Mailboxes and a TLS Secret,
and a mail client's view of the running services (through ``Node.forward``)."""
from __future__ import annotations

import imaplib
import json
import smtplib
import urllib.request

from node import Node, self_signed_tls

DOMAIN_NAME = "example-com"


def resources(namespace: str, *, relay_replicas: int = 1) -> list[dict]:
    """What a user applies: a MailDomain with TLS (as in production), alice and bob."""
    tls = self_signed_tls("mail.example.com")
    objects = [
        {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
         "metadata": {"name": DOMAIN_NAME, "namespace": namespace},
         "spec": {"domain": "example.com", "tls": {"secretName": "mail-example-com-tls"},
                  "relay": {"replicas": relay_replicas},
                  "queue": {"retry": {"initialDelaySeconds": 600, "warnAfterSeconds": 3600}}}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "mail-example-com-tls", "namespace": namespace}, "stringData": tls},
    ]
    for user, password in (("alice", "wonderland"), ("bob", "canwefixit")):
        objects += [
            {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": user, "namespace": namespace},
             "spec": {"address": f"{user}@example.com", "passwordSecretRef": {"name": f"{user}-password"}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{user}-password", "namespace": namespace},
             "stringData": {"password": password}},
        ]
    return objects


REMOTE_MX = {"remote.test": [(10, "mx.remote.test")]}  # resolves; nothing listens on its port 25
REMOTE_A = {"mx.remote.test": "127.0.0.1"}


def send(node: Node, port: int, sender: str, rcpt: str, subject: str, *, login: tuple[str, str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", node.forward(port), timeout=30) as smtp:
        smtp.ehlo("client.test")
        if login:
            smtp.login(*login)
        smtp.sendmail(sender, [rcpt], f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nHello.\r\n")


def inbox_subjects(node: Node, port: int, user: str, password: str) -> list[str]:
    imap = imaplib.IMAP4("127.0.0.1", node.forward(port), timeout=30)
    try:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        subjects = []
        for num in data[0].split():
            _, msg = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(msg[0][1].decode().split(":", 1)[1].strip())
        return subjects
    finally:
        imap.logout()


def status_doc(node: Node, port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.forward(port)}/status", timeout=10) as rsp:
        return json.loads(rsp.read())
