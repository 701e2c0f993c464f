"""The ``correo`` command: one entry point for users, pods and CI.

Each subcommand is a thin shell over a function elsewhere; heavy imports
happen only when the subcommand runs, so ``correo --help`` stays quick.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

EPILOG = """\
examples:
  correo validate examples/              check resources against the CRDs
  correo render examples/quickstart      the manifests the operator would apply
  correo up examples/quickstart          run the whole stack on this machine
  correo status                          what the local stack is doing
  correo queue list                      messages waiting in the local queue
"""


def _call(target: str, args: argparse.Namespace) -> int:
    module, _, func = target.partition(":")
    return int(getattr(importlib.import_module(module), func)(args) or 0)


def ingress_options(parser: argparse.ArgumentParser) -> None:
    """Defaults for the autoconfig Ingress of MailDomains that set ``spec.autoconfig.ingress``
    without a class or issuer (the chart's ``autoconfigIngress`` values)."""
    parser.add_argument("--ingress-class", default=None, metavar="CLASS",
                        help="IngressClass of autoconfig Ingresses whose MailDomain names none "
                             "(default: the cluster's default class)")
    parser.add_argument("--ingress-issuer", default=None, metavar="[KIND/]NAME",
                        help="cert-manager issuer of autoconfig Ingresses whose MailDomain names none: NAME "
                             "(a ClusterIssuer), ClusterIssuer/NAME or Issuer/NAME")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="correo",
        description="correo: a declarative, Kubernetes-native mail stack.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"correo {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    v = sub.add_parser("validate", help="check MailDomain/Mailbox YAML against the CRD schemas and rules",
                       description="Load every YAML file under PATH (multi-document), validate MailDomains and "
                                   "Mailboxes against the CRDs' schemas and CEL rules, check that referenced "
                                   "Secrets and domains exist. Exit 0 when valid, 1 with every error otherwise.")
    v.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or folders")
    v.set_defaults(target="correo_operator.commands:validate")

    r = sub.add_parser("render", help="print the Kubernetes manifests the operator would apply",
                       description="Render the objects for each MailDomain under PATH as one YAML stream: the "
                                   "same bytes the operator applies (for GitOps review and kubectl diff).")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--image", default=None, help="container image for the services (default: the chart's)")
    ingress_options(r)
    r.add_argument("--rspamd-image", default=None,
                   help="image of a managed rspamd (spec.filter.rspamd.managed; default: the chart's)")
    r.set_defaults(target="correo_operator.commands:render")

    up = sub.add_parser("up", help="run relay, queue and mailstore on this machine",
                        description="Load and validate the resources under PATH, render their configuration "
                                    "with the operator's renderer, and run the three services as local "
                                    "processes (on 127.0.0.1 unless --host says otherwise) until Ctrl-C.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("paths", nargs="*", metavar="PATH", help="YAML files or folders (default: examples/quickstart or .)")
    up.add_argument("--data", default=".correo", help="data folder (default: ./.correo)")
    up.add_argument("--port-base", type=int, default=None,
                    help="move every default port by this offset (e.g. 10000: SMTP on 12525)")
    up.add_argument("--dns", action="append", default=[], metavar="HOST:PORT",
                    help="DNS server for MX, SPF, DKIM and DMARC lookups (repeatable; default: $CORREO_DNS, comma-separated, else the system's)")
    up.add_argument("--ephemeral-ports", action="store_true",
                    help="pick free ports for everything (for tests); `correo status -o json` shows them")
    up.add_argument("--remote-smtp-port", type=int, default=None, metavar="PORT",
                    help="port of remote MX hosts (default 25; for test networks)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--log-format", choices=["console", "json"], default="console",
                    help="the services' logs on this terminal: console (readable, default) or json (one "
                         "object per line, as the pods write them)")
    up.set_defaults(target="correo_operator.local.up:main")

    ap = sub.add_parser("apply", help="apply changed YAML to a running `correo up` without restarting it",
                        description="Validate the YAML and write the new configuration of a running `correo up`: "
                                    "mailbox changes are reloaded by the services in place; a MailDomain change "
                                    "restarts them.")
    ap.add_argument("paths", nargs="*", metavar="PATH",
                    help="YAML files or folders (default: what `correo up` was started with); "
                         "`correo up` watches these from now on")
    ap.add_argument("--data", default=".correo", help="data folder of the running `correo up` (default ./.correo)")
    ap.set_defaults(target="correo_operator.local.up:apply")

    st = sub.add_parser("status", help="status of the local stack's MailDomains and Mailboxes",
                        description="The status the operator would write on Kubernetes, computed from the local "
                                    "services: conditions, queue figures, usage, delivery, DNS records, endpoints.")
    st.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                    help="table (default), or json/yaml: a List of the resources with status, plus endpoints")
    st.add_argument("--dns", action="store_true",
                    help="instead: the DNS records each MailDomain's owner publishes (MX, SPF, DKIM, DMARC, SRV, "
                         "MTA-STS, TLS-RPT, autoconfig), as zone-file lines")
    st.add_argument("--from", dest="from_file", metavar="FILE",
                    help="with --dns: read MailDomains with their status from FILE ('-': stdin) instead of the "
                         "local stack, e.g. `kubectl get maildomains -o json | correo status --dns --from -`")
    st.add_argument("--data", default=".correo", help="data folder of the running `correo up` (default ./.correo)")
    st.set_defaults(target="correo_operator.local.statuscmd:main")

    q = sub.add_parser("queue", help="inspect and manage the delivery queue (like mailq, postqueue, postsuper)",
                       description="List the queued messages and each recipient's state, show one with its "
                                   "attempt history, retry them now, or delete them, through the queue's admin "
                                   "API: the local stack's (--data), or any queue's side port (--url).")
    # The options work before or after the action: `correo queue list --data X` and `correo queue --data X list`.
    def queue_options(parser: argparse.ArgumentParser, default) -> None:
        parser.add_argument("--url", default=default(None),
                            help="queue admin URL (default: the local stack's, from --data, every queue replica's); "
                                 "on Kubernetes `kubectl port-forward statefulset/NAME-queue 8082` then --url "
                                 "http://127.0.0.1:8082; several queue replicas: their URLs separated by commas "
                                 "(answers put together)")
        parser.add_argument("--data", default=default(".correo"), help="data folder of `correo up` (default ./.correo)")
        parser.add_argument("-o", "--output", choices=["table", "json"], default=default("table"),
                            help="table (default) or json: the admin API's answer as it is")

    queue_options(q, lambda value: value)
    q_opts = argparse.ArgumentParser(add_help=False)
    queue_options(q_opts, lambda _value: argparse.SUPPRESS)
    qs = q.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    qs.add_parser("list", parents=[q_opts], help="list queued messages and each recipient's state")
    qshow = qs.add_parser("show", parents=[q_opts], help="one message: envelope, recipients, attempt history")
    qshow.add_argument("id")
    qretry = qs.add_parser("retry", parents=[q_opts], help="attempt delivery now")
    which = qretry.add_mutually_exclusive_group(required=True)  # IDs or --all, not both
    which.add_argument("id", nargs="*", default=[], metavar="ID", help="queue IDs of the messages to retry")
    which.add_argument("--all", action="store_true", help="every message with undelivered recipients")
    qdel = qs.add_parser("delete", parents=[q_opts], help="remove messages from the queue (no notice is sent)")
    qdel.add_argument("id", nargs="+", metavar="ID", help="queue IDs of the messages to remove")
    q.set_defaults(target="correo_server.queue.admin:cli")

    sv = sub.add_parser("serve", help="run one service (what the pods run)",
                        description="Run one correo service from a configuration folder (correo.yaml, "
                                    "directory.yaml, tls/, dkim/), as rendered into the ConfigMap and Secret.")
    sv.add_argument("service", choices=["relay", "queue", "mailstore", "autoconfig", "proxy"],
                    help="proxy: the IMAP/POP3/ManageSieve front of a mailstore with shards")
    sv.add_argument("--config", required=True, metavar="DIR", help="configuration folder")
    sv.add_argument("--log-format", choices=["console", "json"], default=None,
                    help="override the configuration's logFormat")
    sv.add_argument("--ports-file", default=None, metavar="FILE",
                    help="write the bound ports as JSON here once listening (for port 0)")
    sv.add_argument("--shard", type=int, default=None, metavar="N",
                    help="mailstore: run as shard N of mailstore.shards (default: $CORREO_SHARD, else the "
                         "ordinal the host name ends with, as in a StatefulSet pod)")
    sv.add_argument("--replica", type=int, default=None, metavar="N",
                    help="queue: run as replica N of queue.replicas (default: $CORREO_REPLICA, else the ordinal "
                         "the host name ends with); a replica past the list drains its spool into the others")
    sv.add_argument("--spool", default=None, metavar="DIR",
                    help="queue: the spool folder (default: the replica's, else queue.spoolDir)")
    sv.set_defaults(target="correo_server.serve:main")

    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)",
                        description="Watch MailDomains, Mailboxes and their Secrets (in-cluster credentials, "
                                    "or the current kubeconfig context), apply the rendered relay, queue and "
                                    "mailstore, and write their status back every --status-interval seconds. "
                                    "What the Helm chart's Deployment runs.")
    op.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable; default all)")
    op.add_argument("--status-interval", type=float, default=30.0, help="seconds between status polls (default 30)")
    op.add_argument("--metrics-port", type=int, default=8080,
                    help="port of the side port: /metrics (Prometheus), /healthz, /readyz, /status (default 8080)")
    op.add_argument("--image", default=None, help="image the rendered workloads run")
    ingress_options(op)
    op.add_argument("--rspamd-image", default=None,
                    help="image of a managed rspamd (default: $CORREO_RSPAMD_IMAGE, else the chart's)")
    op.set_defaults(target="correo_operator.kopfapp:main")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "target", None):
        parser.print_help()
        return 2
    try:
        return _call(args.target, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
