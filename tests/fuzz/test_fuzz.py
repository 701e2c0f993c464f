"""Fuzzing as a habit: every harness (:mod:`harnesses`) over its committed
corpus (crashes found once stay found), over hypothesis-generated inputs,
and under atheris for a few seconds each (coverage-guided; skipped with a
message when atheris is not installed).  A parser that lets anything but
its own refusal escape, or breaks a harness's property, fails here with
the input that did it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harnesses import CORPUS, HARNESSES, corpus  # noqa: E402

NAMES = sorted(HARNESSES)
ATHERIS_SECONDS = int(os.environ.get("CORREO_FUZZ_SECONDS", "2"))
# In the suite the run is the same every time (a fixed seed and number of
# inputs, ~1-3 s each): a red CI names a change, not a lucky draw. A longer,
# exploring run (CORREO_FUZZ_SECONDS, or run.py as the README says) draws
# fresh inputs; what it finds goes into the corpus, which the suite replays.
ATHERIS_BUDGET = ((f"-max_total_time={ATHERIS_SECONDS}",) if "CORREO_FUZZ_SECONDS" in os.environ
                  else ("-seed=1", "-runs=1500"))


@pytest.mark.parametrize("name", NAMES)
def test_every_corpus_input_is_handled(name):
    inputs = corpus(name)
    assert inputs, f"tests/fuzz/corpus/{name}/ has no seed"
    for filename, data in inputs:
        try:
            HARNESSES[name](data)
        except Exception as exc:  # noqa: BLE001 - say which input
            raise AssertionError(f"{name}: corpus file {filename} raised {exc!r}") from exc


def _mutations(name: str):
    seeds = [data for _, data in corpus(name)] or [b""]

    @st.composite
    def mutated(draw) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 6))):
            op = draw(st.integers(0, 3))
            at = draw(st.integers(0, len(data)))
            if op == 0:
                data[at:at] = draw(st.binary(min_size=1, max_size=12))
            elif op == 1 and data:
                del data[at:at + draw(st.integers(1, 16))]
            elif op == 2:
                data[at:at] = draw(st.sampled_from([b"{", b"}", b"(", b")", b"\"", b"\\", b"\r\n", b"\n", b".",
                                                    b"{99999999}\r\n", b"<", b">", b"\x00", b"\xff", b":", b" ",
                                                    b"--", b"=?", b"*", b"[", b"]"]))
            else:
                data = data * 2 if len(data) < 2048 else data
        return bytes(data)

    return st.one_of(mutated(), st.binary(max_size=512))


@pytest.mark.parametrize("name", NAMES)
def test_hypothesis_inputs_are_handled(name):
    harness = HARNESSES[name]

    @settings(max_examples=60 if name == "crd_loader" else 250, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_mutations(name))
    def check(data: bytes) -> None:
        harness(data)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_a_short_atheris_run_finds_nothing(name, tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed: pip install atheris (the test extra has it)")
    work = tmp_path / "corpus"
    shutil.copytree(CORPUS / name, work)
    run = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("run.py")), name, *ATHERIS_BUDGET,
         "-rss_limit_mb=1024", "-timeout=10", str(work)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120 + ATHERIS_SECONDS)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    found = run.stderr.rfind("=== Uncaught Python exception")
    assert run.returncode == 0 and not crashes, (
        f"atheris found a problem in {name} ({crashes}); copy the file into tests/fuzz/corpus/{name}/:\n"
        + (run.stderr[found:found + 6000] if found >= 0 else run.stderr[-4000:]))
    assert "Done" in run.stderr or "DONE" in run.stderr or "#" in run.stderr
