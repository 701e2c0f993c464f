"""Managing a running queue: the admin HTTP API and ``correo queue``.

HTTP, on the queue's side port next to ``/status`` (like ``mailq``,
``postqueue -f``, ``postsuper -d``)::

    GET    /queue                 every message, each recipient's state
    GET    /queue/{id}            one message with the attempt history
    POST   /queue/{id}/retry      attempt its undelivered recipients now
    POST   /queue/retry-all       the same for every message
    DELETE /queue/{id}            remove it (no notice is sent)

The side port is internal (the Service is not exposed outside the cluster and
the NetworkPolicy admits only the operator); ``correo queue`` finds it through
``--url`` or the local stack's ``<data>/state.json``.  With queue replicas
(``queue.replicas``) each has its own spool and side port: ``correo queue``
asks every one (``--url A,B``, or all the local stack runs) and puts the
answers together: ``list`` shows every message with its replica, ``show``,
``retry`` and ``delete`` find the replica that holds each ID.

:func:`cli` is what ``correo queue list|show|retry|delete`` runs (argument
parsing is the operator CLI's; ``retry`` and ``delete`` take several IDs);
it uses only the standard library.  It exits 1 when there is no queue to
talk to (nothing running, nothing answering, or something that is not the
queue's admin API), like ``correo status``, and 2 for usage errors.
"""
from __future__ import annotations

import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..guard import is_loopback
from .. import localstate
from ..sideport import SidePort
from ..statusdoc import rfc3339
from .records import Message

if TYPE_CHECKING:
    from .runner import Runner


def message_summary(msg: Message, *, detail: bool = False) -> dict[str, Any]:
    env = msg.env
    out: dict[str, Any] = {
        "id": env.id, "size": env.size, "arrival": rfc3339(env.arrival), "sender": env.sender,
        "domain": env.domain, "recipients": [],
    }
    if env.notice:
        out["notice"] = {"kind": env.notice, "about": env.about}
    for r in msg.rcpts:
        item: dict[str, Any] = {
            "address": r.rcpt.address, "state": r.state, "attempts": r.attempt_count,
            # An attempt running now has no next attempt yet (its outcome decides).
            "inProgress": bool(r.busy) and not r.final,
            "nextAttempt": rfc3339(r.next_attempt) if not r.final and not r.busy else None,
            "lastReply": r.reply or None, "destination": r.destination or None,
        }
        if r.rcpt.original and r.rcpt.original != r.rcpt.address:
            item["original"] = r.rcpt.original
        if detail:
            item["local"] = r.rcpt.local
            item["history"] = [{"time": rfc3339(a.time), "server": a.server, "reply": a.reply} for a in r.attempts]
        out["recipients"].append(item)
    if detail:
        out["senderMailbox"] = env.sender_mailbox or None
        out["smtputf8"] = env.smtputf8
        out["body"] = env.body
        out["delayedNoticeSent"] = msg.delayed_notified
    return out


class AdminSidePort(SidePort):
    """The queue's side port: the shared endpoints plus the admin API."""

    def __init__(self, *args, runner: "Runner", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runner = runner

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.append(self._loopback_only)
        app.router.add_get("/queue", self._list)
        app.router.add_post("/queue/retry-all", self._retry_all)
        app.router.add_get("/queue/{id}", self._show)
        app.router.add_post("/queue/{id}/retry", self._retry)
        app.router.add_delete("/queue/{id}", self._delete)
        return app

    @web.middleware
    async def _loopback_only(self, request: web.Request, handler):
        """The admin API lists addresses and deletes mail: it answers only
        connections from this host (on Kubernetes: ``kubectl port-forward``
        or ``exec``).  /status, /metrics and the probes stay open to the
        cluster for the operator and Prometheus."""
        if request.path.startswith("/queue") and not is_loopback(request.remote):
            return web.json_response(
                {"error": "the queue admin API answers only on loopback; use kubectl port-forward"}, status=403)
        return await handler(request)

    @staticmethod
    def _missing(msg_id: str) -> web.Response:
        return web.json_response({"error": f"no message {msg_id} in the queue"}, status=404)

    async def _list(self, _request: web.Request) -> web.Response:
        msgs = sorted(self.runner.state, key=lambda m: (m.env.arrival, m.id))
        return web.json_response({"count": len(msgs), "messages": [message_summary(m) for m in msgs]})

    async def _show(self, request: web.Request) -> web.Response:
        msg = self.runner.state.get(request.match_info["id"])
        if msg is None:
            return self._missing(request.match_info["id"])
        return web.json_response(message_summary(msg, detail=True))

    async def _retry(self, request: web.Request) -> web.Response:
        msg_id = request.match_info["id"]
        count = await self.runner.retry(msg_id)
        if count is None:
            return self._missing(msg_id)
        return web.json_response({"id": msg_id, "recipients": count})

    async def _retry_all(self, _request: web.Request) -> web.Response:
        messages, recipients = await self.runner.retry_all()
        return web.json_response({"messages": messages, "recipients": recipients})

    async def _delete(self, request: web.Request) -> web.Response:
        msg_id = request.match_info["id"]
        if not await self.runner.delete(msg_id):
            return self._missing(msg_id)
        return web.json_response({"id": msg_id, "deleted": True})


# ---------------------------------------------------------------------------
# correo queue ...
# ---------------------------------------------------------------------------

class AdminError(Exception):
    """The queue cannot be reached or answered wrongly: exit status 1."""

    exit_code = 1


class UsageError(AdminError):
    """The command line asks for something impossible: exit status 2."""

    exit_code = 2


class NotAQueue(AdminError):
    def __init__(self, url: str) -> None:
        super().__init__(f"no correo queue admin API at {url} (is it the queue's side port?)")


def base_urls(args) -> list[str]:
    """The side port of every queue replica: ``--url`` (several separated by
    commas), or those the running local stack names."""
    if getattr(args, "url", None):
        return [u.strip().rstrip("/") for u in str(args.url).split(",") if u.strip()]
    data = getattr(args, "data", None)
    if data:
        try:
            replicas = localstate.find(data)["endpoints"]["queue"]["replicas"]
        except (localstate.NotRunning, KeyError, TypeError):
            replicas = None
        if replicas:
            return [str(u).rstrip("/") for u in replicas]
    return [base_url(args)]


def base_url(args) -> str:
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    data = getattr(args, "data", None)
    if not data:
        raise UsageError("no queue to talk to: give --url http://HOST:PORT (the queue's side port) "
                         "or --data DIR of a running `correo up`")
    try:
        state = localstate.find(data)
    except localstate.NotRunning as exc:
        raise AdminError(f"{exc}, or give --url http://HOST:PORT of the queue's side port") from None
    state_file = Path(data) / localstate.STATE_FILE
    try:
        url = state["endpoints"]["queue"]["http"]
    except (KeyError, TypeError):
        raise AdminError(f"{state_file} names no queue endpoint (endpoints.queue.http)") from None
    url = str(url)
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return url.rstrip("/")


def request(base: str, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, Any]:
    """(HTTP status, JSON body) of one admin API call.  Raises
    :class:`AdminError` when nothing answers at ``base`` and
    :class:`NotAQueue` when what answers is not a queue's admin API (not
    HTTP, not JSON, or a 404 that is not the queue's "no such message")."""
    url = base + path
    req = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
    except http.client.HTTPException:  # something that does not speak HTTP (an SMTP port...)
        raise NotAQueue(base) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the queue at {base}: {reason}") from None
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    if status == 200 or (isinstance(body, dict) and isinstance(body.get("error"), str)):
        return status, body  # the queue's answer (it explains its refusals)
    if status >= 500:
        raise AdminError(f"the queue at {base} failed: HTTP {status}")
    raise NotAQueue(base)  # a 404 page of some other server, or not JSON at all


# What a queue's answer to each call holds (anything else is not a queue).
_EXPECTED = {"list": "messages", "show": "recipients", "retry": "recipients", "delete": "deleted"}


def _call(base: str, command: str, path: str, method: str = "GET") -> tuple[int, Any]:
    """:func:`request`, and a 200 must hold what the queue's answer holds."""
    status, doc = request(base, path, method)
    if status == 200 and not (isinstance(doc, dict) and _EXPECTED[command] in doc):
        raise NotAQueue(base)
    return status, doc


def _ids(args) -> list[str]:
    """The queue IDs given, in order, each once (``args.id``: a list, or a
    single string from callers that pass one)."""
    value = getattr(args, "id", None)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(i) for i in items if str(i)))


def _size(n: int) -> str:
    return f"{n}" if n < 10_000 else f"{n // 1024}K"


def format_list(doc: dict) -> str:
    """``mailq``-like: one block per message, one line per recipient."""
    msgs = doc.get("messages", [])
    if not msgs:
        return "Mail queue is empty\n"
    lines = [f"{'-Queue ID-':<19} {'--Size--':>8} {'----Arrival Time----':<20}  -Sender/Recipient-------"]
    total = 0
    for m in msgs:
        total += m["size"]
        sender = m["sender"] or "MAILER-DAEMON"
        where = f"  (replica {m['replica']})" if "replica" in m else ""
        lines.append(f"{m['id']:<19} {_size(m['size']):>8} {m['arrival']:<20}  {sender}{where}")
        for r in m["recipients"]:
            if r.get("inProgress"):  # like mailq's "*": being delivered right now
                lines.append(f"{'':<51}{r['address']}  {r['state']}, delivery in progress")
                if r.get("lastReply"):
                    lines.append(f"{'':<51}  (last attempt: {r['lastReply']})")
                continue
            lines.append(f"{'':<51}{r['address']}  {r['state']}")
            if r["state"] in ("pending", "deferred"):
                note = f"next attempt {r['nextAttempt']}" if r.get("nextAttempt") else ""
                if r.get("lastReply"):
                    note = f"{r['lastReply']}; {note}" if note else r["lastReply"]
                if note:
                    lines.append(f"{'':<51}  ({note})")
            elif r.get("lastReply"):
                lines.append(f"{'':<51}  ({r['lastReply']})")
        lines.append("")
    over = f" on {doc['replicas']} queue replicas" if doc.get("replicas") else ""
    lines.append(f"-- {max(total // 1024, 1) if total else 0} Kbytes in {len(msgs)} Request{'s' if len(msgs) != 1 else ''}"
                 f"{over}.")
    return "\n".join(lines) + "\n"


def format_show(m: dict) -> str:
    lines = [
        f"Queue ID:    {m['id']}" + (f"  (replica {m['replica']})" if "replica" in m else ""),
        f"Arrival:     {m['arrival']}",
        f"Size:        {m['size']} bytes",
        f"Sender:      {m['sender'] or '<>'}",
        f"Domain:      {m.get('domain') or '-'}",
    ]
    if m.get("notice"):
        lines.append(f"Notice:      {m['notice']['kind']} notice about {m['notice']['about']}")
    lines.append("Recipients:")
    for r in m["recipients"]:
        orig = f" (for {r['original']})" if r.get("original") else ""
        lines.append(f"  {r['address']}{orig}: {r['state']}, {r['attempts']} attempt(s)"
                     + (", delivery in progress" if r.get("inProgress") else ""))
        if r.get("nextAttempt"):
            lines.append(f"    next attempt: {r['nextAttempt']}")
        for a in r.get("history", []):
            lines.append(f"    {a['time']}  {a['server']}  {a['reply']}")
    return "\n".join(lines) + "\n"


def _merged(bases: list[str], command: str, path: str, method: str) -> tuple[int, list[dict]]:
    """One call on every replica, the answers added up (``list``: every
    message, each naming its replica, oldest first; ``retry --all``: the
    counts).  A replica that cannot be reached is reported and the others
    still answer (exit status 1)."""
    code, docs = 0, []
    failed: AdminError | None = None
    for i, base in enumerate(bases):
        try:
            status, doc = _call(base, command, path, method)
        except AdminError as exc:
            print(f"correo queue {command}: replica {i}: {exc}", file=sys.stderr)
            failed, code = exc, 1
            continue
        if status != 200:
            print(f"correo queue {command}: replica {i}: {doc['error']}", file=sys.stderr)
            code = 1
            continue
        docs.append((i, doc))
    if not docs:
        if failed is not None:
            raise failed
        return 1, []
    if command == "list":
        msgs = [{**m, "replica": i} for i, doc in docs for m in doc["messages"]]
        msgs.sort(key=lambda m: (m["arrival"], m["id"]))
        return code, [{"count": len(msgs), "messages": msgs, "replicas": len(bases)}]
    return code, [{"messages": sum(d["messages"] for _, d in docs), "recipients": sum(d["recipients"] for _, d in docs)}]


def _find_each(bases: list[str], command: str, ids: list[str], path: str, method: str) -> tuple[int, list[dict]]:
    """:func:`_for_each` over replicas: each ID is asked of the replicas in
    turn until one holds it (a message lives on exactly one)."""
    code, docs = 0, []
    for msg_id in ids:
        answer: dict | None = None
        error = f"no message {msg_id} in the queue"
        for i, base in enumerate(bases):
            try:
                status, doc = _call(base, command, path.format(id=urllib.parse.quote(msg_id, safe="")), method)
            except AdminError as exc:
                print(f"correo queue {command}: replica {i}: {exc}", file=sys.stderr)
                code = 1
                continue
            if status == 200:
                answer = {**doc, "replica": i}
                break
            if status != 404:
                error = doc["error"]
        if answer is None:
            print(f"correo queue {command}: {error}", file=sys.stderr)
            docs.append({"id": msg_id, "error": error})
            code = 1
        else:
            docs.append(answer)
    return code, docs


def _once(base: str, command: str, path: str, method: str) -> tuple[int, list[dict]]:
    status, doc = _call(base, command, path, method)
    if status != 200:
        print(f"correo queue {command}: {doc['error']}", file=sys.stderr)
        return 1, []
    return 0, [doc]


def _for_each(base: str, command: str, ids: list[str], path: str, method: str) -> tuple[int, list[dict]]:
    """Run one call per queue ID; (exit status, answers).  A missing ID is
    reported and the others still run (like ``postsuper -d``)."""
    code, docs = 0, []
    for msg_id in ids:
        status, doc = _call(base, command, path.format(id=urllib.parse.quote(msg_id, safe="")), method)
        if status != 200:
            print(f"correo queue {command}: {doc['error']}", file=sys.stderr)
            docs.append({"id": msg_id, "error": doc["error"]})
            code = 1
        else:
            docs.append(doc)
    return code, docs


def cli(args) -> int:
    """``correo queue list | show ID | retry ID... | retry --all | delete ID...``.

    Exit status: 0 done; 1 the queue cannot be reached, is not there, or
    refused (an unknown ID: the others are still done); 2 a usage error."""
    out = sys.stdout
    as_json = getattr(args, "output", "table") == "json"
    command = args.queue_command
    ids = _ids(args)
    try:
        if command not in _EXPECTED:
            raise UsageError(f"unknown queue command {command!r}")
        retry_all = command == "retry" and bool(getattr(args, "all", False))
        if retry_all and ids:
            raise UsageError("retry takes queue IDs or --all, not both")
        if command in ("show", "retry", "delete") and not ids and not retry_all:
            raise UsageError(f"{command} needs a queue ID" + (" or --all" if command == "retry" else ""))
        if command == "show" and len(ids) > 1:
            raise UsageError("show takes one queue ID")
        urls = base_urls(args)
        if len(urls) > 1:  # queue replicas: every one asked, the answers put together
            if command == "list":
                code, docs = _merged(urls, command, "/queue", "GET")
            elif retry_all:
                code, docs = _merged(urls, command, "/queue/retry-all", "POST")
            elif command == "show":
                code, docs = _find_each(urls, command, ids, "/queue/{id}", "GET")
            elif command == "retry":
                code, docs = _find_each(urls, command, ids, "/queue/{id}/retry", "POST")
            else:
                code, docs = _find_each(urls, command, ids, "/queue/{id}", "DELETE")
        elif command == "list":
            code, docs = _once(urls[0], command, "/queue", "GET")
        elif retry_all:
            code, docs = _once(urls[0], command, "/queue/retry-all", "POST")
        elif command == "show":
            code, docs = _for_each(urls[0], command, ids, "/queue/{id}", "GET")
        elif command == "retry":
            code, docs = _for_each(urls[0], command, ids, "/queue/{id}/retry", "POST")
        else:
            code, docs = _for_each(urls[0], command, ids, "/queue/{id}", "DELETE")
    except AdminError as exc:
        print(f"correo queue {command}: {exc}" if isinstance(exc, UsageError) else f"correo queue: {exc}",
              file=sys.stderr)
        return exc.exit_code
    done = [d for d in docs if "error" not in d]
    if as_json:
        if len(ids) > 1:  # several IDs: one answer each, refusals included
            out.write(json.dumps(docs, indent=2, sort_keys=True) + "\n")
        elif done:
            out.write(json.dumps(done[0], indent=2, sort_keys=True) + "\n")
        return code
    for doc in done:
        if command == "list":
            out.write(format_list(doc))
        elif command == "show":
            out.write(format_show(doc))
        elif command == "retry":
            if "messages" in doc:
                out.write(f"retrying {doc['messages']} message(s), {doc['recipients']} recipient(s)\n")
            else:
                out.write(f"{doc['id']}: retrying {doc['recipients']} recipient(s)\n")
        elif command == "delete":
            out.write(f"{doc['id']}: deleted\n")
    return code
