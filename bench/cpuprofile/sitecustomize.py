"""CPU-time sampling for ``bench/smtp_ingest.py --cpu-profile`` (put on
PYTHONPATH of ``correo up``, so each service loads it at start).

Every millisecond of the process's CPU time (``ITIMER_PROF``: user and
kernel, not wall time), the Python stack of the main thread is counted;
the counts are written, one collapsed stack per line, to
``$CORREO_CPUPROF/cpu-<service>.txt`` when the service exits.  Unlike
py-spy (which samples wall time and, with ``--gil``, counts a process that
waits for a CPU as busy), a loaded machine does not skew it; time in C
code is charged to the Python line that called it.  Signals that arrive
during one long C call count once, so C-heavy stretches are under-counted.
"""
import os
import sys

_DIR = os.environ.get("CORREO_CPUPROF")
_NAME = next((n for n in ("relay", "queue", "mailstore") if n in sys.argv[1:4]), None)

if _DIR and _NAME:
    import atexit
    import collections
    import signal

    _counts: collections.Counter = collections.Counter()

    def _sample(_sig, frame):
        parts = []
        while frame is not None:
            code = frame.f_code
            parts.append(f"{code.co_qualname} ({code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
            frame = frame.f_back
        _counts[";".join(reversed(parts))] += 1

    def _dump():
        signal.setitimer(signal.ITIMER_PROF, 0, 0)  # no sample may change the counts while they are written
        with open(os.path.join(_DIR, f"cpu-{_NAME}.txt"), "w") as fh:
            for stack, n in list(_counts.items()):
                fh.write(f"{stack} {n}\n")

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    atexit.register(_dump)
