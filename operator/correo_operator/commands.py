"""``correo validate`` and ``correo render``: the loader and the renderer at the
command line (the GitOps review path: what would the operator apply?)."""
from __future__ import annotations

import sys

import yaml

from . import loading, managedrspamd, render as rendering


def _report(loaded: loading.Loaded, out=None) -> None:
    out = out or sys.stderr
    for problem in loaded.problems:
        print(str(problem), file=out)


def validate(args) -> int:
    loaded = loading.load_paths(args.paths)
    _report(loaded)
    if not loaded.files and not loaded.errors:
        print("correo validate: no YAML files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if not loaded.errors and not (loaded.domains or loaded.mailboxes):
        print("correo validate: no MailDomain or Mailbox in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if loaded.errors:
        n = len(loaded.errors)
        print(f"correo validate: {loading.error_summary(loaded)}", file=sys.stderr)
        return 1
    print(f"{len(loaded.domains)} MailDomain(s), {len(loaded.mailboxes)} Mailbox(es), "
          f"{len(loaded.secrets)} Secret(s) in {len(loaded.files)} file(s): valid")
    return 0


def render_documents(loaded: loading.Loaded, image: str | None = None,
                     ingress_defaults: "rendering.AutoconfigIngress | None" = None,
                     rspamd_image: str | None = None) -> list[dict]:
    """The objects for every MailDomain loaded, in a stable order."""
    objects: list[dict] = []
    for domain in loaded.maildomains():
        objects += rendering.render(domain, loaded.mailboxes_of(domain), loaded.secrets_in(domain.namespace),
                                    image=image or rendering.DEFAULT_IMAGE, ingress_defaults=ingress_defaults,
                                    rspamd_image=rspamd_image or managedrspamd.DEFAULT_IMAGE)
    return objects


class _ReviewDumper(yaml.SafeDumper):
    """YAML for people reviewing a diff: a multi-line value (a ConfigMap's
    ``correo.yaml``, a script) as a literal block scalar, one line per line,
    and long values never folded."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML itself falls back to a quoted string when a block cannot hold
    # the value exactly (trailing spaces, control characters).
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ReviewDumper.add_representer(str, _str)


def dump_stream(objects: list[dict]) -> str:
    return "".join("---\n" + yaml.dump(obj, Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False,
                                       allow_unicode=True, width=1 << 16)
                   for obj in objects)


def render(args) -> int:
    loaded = loading.load_paths(args.paths)
    if loaded.errors:
        _report(loaded)
        print("correo render: fix the errors above first (see `correo validate`)", file=sys.stderr)
        return 1
    for w in loaded.warnings:
        print(str(w), file=sys.stderr)
    try:
        defaults = rendering.ingress_defaults(args.ingress_class, args.ingress_issuer)
    except ValueError as exc:
        print(f"correo render: --ingress-issuer {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dump_stream(render_documents(loaded, args.image, defaults, getattr(args, "rspamd_image", None))))
    return 0
