"""What the tests need from the machine beyond Python packages, checked the
way the tests use it: the skip guards of tests that drive real programs.

A guard checks what the test really needs (swaks *with TLS*, not only a
``swaks`` on ``PATH``) and its reason says how to get it.
``scripts/setup-test-env`` installs all of it on a fresh Debian machine;
``tests/foundation/test_fresh_machine.py`` checks that it does.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import pytest

SETUP = "scripts/setup-test-env installs it"


@functools.cache
def swaks_tls_problem() -> str | None:
    """None when swaks is installed and can speak TLS; else why not and how to fix it."""
    swaks = shutil.which("swaks")
    if swaks is None:
        return f"swaks is not installed ({SETUP}; Debian: apt-get install swaks libnet-ssleay-perl)"
    try:
        done = subprocess.run([swaks, "--support"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"swaks --support failed: {exc}"
    if "TLS supported" not in done.stdout + done.stderr:
        return (f"swaks cannot speak TLS: Perl's Net::SSLeay is missing ({SETUP}; "
                "Debian: apt-get install libnet-ssleay-perl)")
    return None


def needs_swaks_tls(test):
    """Skip ``test`` unless swaks can do STARTTLS and implicit TLS."""
    problem = swaks_tls_problem()
    return pytest.mark.skipif(problem is not None, reason=problem or "")(test)


def program_problem(name: str, package: str) -> str | None:
    """None when ``name`` is on PATH; else a reason naming the Debian package."""
    if shutil.which(name):
        return None
    return f"{name} is not installed ({SETUP}; Debian: apt-get install {package})"
