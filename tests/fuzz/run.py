"""Run one harness under atheris (coverage-guided): ``python tests/fuzz/run.py
NAME [libFuzzer options] [corpus folders]``, e.g.::

    python tests/fuzz/run.py imap -max_total_time=600 tests/fuzz/corpus/imap

NAME is one of :data:`harnesses.HARNESSES` (``--list`` prints them).  A
crash leaves ``crash-<sha1>`` in the current folder: copy it into
``tests/fuzz/corpus/NAME/`` (the suite then runs it for ever) and fix the
parser.  Needs ``pip install atheris`` (the ``test`` extra has it)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import harnesses

    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "--list"):
        print(__doc__)
        print("harnesses:", " ".join(harnesses.HARNESSES))
        sys.exit(0 if len(sys.argv) > 1 else 2)
    name = sys.argv.pop(1)
    if name not in harnesses.HARNESSES:
        sys.exit(f"no harness {name!r}; one of: {' '.join(harnesses.HARNESSES)}")
    import atheris

    with atheris.instrument_imports(include=["correo_server", "correo_operator"]):
        import correo_server.mailstore.imap.commands  # noqa: F401 - instrumented before first use
        import correo_server.mailstore.message  # noqa: F401
        import correo_server.relay.data  # noqa: F401
        import correo_server.wire.paths  # noqa: F401
        import correo_server.mailstore.pop3.commands  # noqa: F401
        import correo_server.mailstore.managesieve.parser  # noqa: F401
        import correo_server.sieve.fuzz  # noqa: F401
        if name == "crd_loader":
            import correo_operator.loading  # noqa: F401
    atheris.Setup(sys.argv, harnesses.HARNESSES[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
