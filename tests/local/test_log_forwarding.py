"""``correo up`` forwards its services' log lines: whole lines, never two
services within one line, unchanged in JSON, named in front on a console;
and a service writes the lines of one event-loop turn in one piece."""
from __future__ import annotations

import asyncio
import io
import json
import sys

from correo_operator.local.supervisor import Child, Supervisor
from correo_server import logs




def out_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)


async def pump(log_format: str, pieces: list[bytes]) -> str:
    script = ("import sys, time\n"
              f"for piece in {pieces!r}:\n"
              "    sys.stdout.buffer.write(piece); sys.stdout.buffer.flush(); time.sleep(0.02)\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    sup = Supervisor(layout=None, ports={}, log_format=log_format)  # type: ignore[arg-type]
    sup.out = out_stream()
    await sup._pump(Child("queue", process=proc))
    await proc.wait()
    return sup.out.buffer.getvalue().decode()


async def test_json_lines_pass_unchanged_and_whole():
    lines = [json.dumps({"event": "queued", "service": "queue", "n": i}) for i in range(3)]
    text = "\n".join(lines) + "\n"
    got = await pump("json", [text[:10].encode(), text[10:50].encode(), text[50:].encode()])
    assert got == text


async def test_console_lines_get_the_service_name_in_front():
    got = await pump("console", [b"one\ntw", b"o\nthree"])
    assert got == "queue    | one\nqueue    | two\nqueue    | three\n"


async def test_a_service_writes_its_lines_in_one_piece_a_moment_later():
    class Counting(io.StringIO):
        writes = 0

        def write(self, text):
            Counting.writes += 1
            return super().write(text)

    stream = Counting()
    buffer = logs.TurnBuffer(stream, delay=0.01)
    for i in range(5):
        buffer.write(f"line {i}\n")
        await asyncio.sleep(0)
    assert stream.getvalue() == ""
    await asyncio.sleep(0.05)
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(5)) and Counting.writes == 1
    buffer.write("outside a turn\n")
    buffer.flush()
    assert stream.getvalue().endswith("outside a turn\n")


def test_lines_written_on_an_event_loop_that_ended_still_go_out_from_the_next():
    """A service may log from a short event loop (a start-up step) before its
    main one: the flush that loop scheduled never runs, and the main loop's
    lines must not wait behind it for ever."""
    stream = io.StringIO()
    buffer = logs.TurnBuffer(stream, delay=0.01)

    async def one_line(text: str, wait: float) -> None:
        buffer.write(text)
        await asyncio.sleep(wait)

    asyncio.run(one_line("from the first loop\n", 0))  # ends before its flush is due
    asyncio.run(one_line("from the main loop\n", 0.1))
    assert stream.getvalue() == "from the first loop\nfrom the main loop\n"


class BrokenOut(io.RawIOBase):
    """Our own output after the terminal closed: every write fails."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_service_is_still_drained_when_our_output_fails():
    """The service never blocks on a full pipe because ``correo up`` cannot
    write its lines any more: they are dropped, the service runs on."""
    script = "import sys\nfor i in range(4000):\n    print('x' * 100, flush=True)\n"  # 400 KB: 6 pipe buffers
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    sup = Supervisor(layout=None, ports={}, log_format="console")  # type: ignore[arg-type]
    sup.out = io.TextIOWrapper(io.BufferedWriter(BrokenOut()), encoding="utf-8")
    await asyncio.wait_for(sup._pump(Child("queue", process=proc)), 60)
    assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_stop_stops_every_child_even_when_stopping_one_fails():
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    sup = Supervisor(layout=None, ports={}, order=("mailstore", "relay"))  # type: ignore[arg-type]
    for name in sup.order:
        sup.children[name] = Child(name, process=await asyncio.create_subprocess_exec(*sleeper))

    async def failed():
        raise RuntimeError("its log forwarding failed")
    sup.children["relay"].pump = asyncio.create_task(failed())  # stopped first: relay, then mailstore
    try:
        await sup.stop()
        for child in sup.children.values():
            assert child.process.returncode is not None
    finally:
        for child in sup.children.values():
            if child.process.returncode is None:
                child.process.kill()
                await child.process.wait()
