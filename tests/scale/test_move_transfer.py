"""The files of a mailbox move (``mailstore.transfer``): a fenced mailbox
exported from one data folder and imported into another opens there with
the same UIDVALIDITY, UIDs, MODSEQs, flags, subscriptions, Sieve scripts
and usage; a truncated or altered stream puts nothing in place; a fenced
mailbox takes no more writes."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from correo_server.mailstore import transfer
from correo_server.mailstore.store import MailboxMoving, Store

ADDRESS = "alice@example.com"


def message(i: int) -> bytes:
    return f"From: bob@example.com\r\nSubject: message {i}\r\n\r\nbody {i}\r\n".encode()


async def filled(data: Path) -> Store:
    store = Store(data)
    mbox = await store.mailbox(ADDRESS)
    inbox = await mbox.folder("INBOX")
    for i in range(20):
        await store.deliver(ADDRESS, message(i))
    await inbox.store([2, 3], ["\\Seen", "$Important"], "add")
    await inbox.expunge([5])
    work = await mbox.create("Work/2026")
    await inbox.copy([1, 4], work)
    await mbox.subscribe("Work/2026")
    sieve = mbox.root / transfer.SIEVE_DIR / "scripts"
    sieve.mkdir(parents=True)
    (sieve / "main.sieve").write_text('require "fileinto";\nkeep;\n')
    return store


async def view(store: Store) -> dict:
    mbox = await store.mailbox(ADDRESS)
    out = {"subscriptions": mbox.subscriptions(), "usage": mbox.usage()}
    for entry in await mbox.list_folders():
        if not entry.selectable:
            continue
        f = await mbox.folder(entry.name)
        out[entry.name] = (f.uidvalidity, f.uidnext, f.highestmodseq,
                           [(m.uid, sorted(m.flags), m.modseq, m.size) for m in f.messages()],
                           [await f.read(m.uid) for m in f.messages()])
    return out


async def moved(tmp_path: Path) -> tuple[Store, dict, bytes, dict]:
    source = await filled(tmp_path / "a")
    before = await view(source)
    doc = transfer.fence(source.data_dir, ADDRESS, to=1)
    source.fenced[ADDRESS] = doc
    await source.release(ADDRESS)
    out = io.BytesIO()
    manifest = transfer.export(source.data_dir, ADDRESS, out, fence_id=doc["fence"])
    return source, before, out.getvalue(), manifest


async def test_an_imported_mailbox_has_the_same_uids_uidvalidity_modseqs_and_scripts(tmp_path):
    source, before, stream, manifest = await moved(tmp_path)
    done = transfer.import_stream(tmp_path / "b", ADDRESS, io.BytesIO(stream), source=0,
                                  fence_id=manifest["fence"])
    assert done.digest == manifest["digest"] and done.summary["messages"] == 21  # 19 in INBOX + 2 copies
    target = Store(tmp_path / "b")
    try:
        assert await view(target) == before
        root = transfer.mailbox_root(tmp_path / "b", ADDRESS)
        assert (root / transfer.SIEVE_DIR / "scripts" / "main.sieve").read_text().endswith("keep;\n")
        marker = transfer.read_marker(root, transfer.IN_MARKER)
        assert marker["from"] == 0 and marker["digest"] == done.digest
        assert not (root / transfer.OUT_MARKER).exists()  # the source's fence does not travel
        uid = await target.deliver(ADDRESS, message(99))  # and it goes on where the source stopped
        assert uid == before["INBOX"][1]
    finally:
        await target.close()
        await source.close()


async def test_a_fenced_mailbox_takes_no_writes_and_is_not_reopened(tmp_path):
    store = await filled(tmp_path / "a")
    mbox = await store.mailbox(ADDRESS)
    inbox = await mbox.folder("INBOX")
    store.fenced[ADDRESS] = transfer.fence(store.data_dir, ADDRESS, to=2)
    with pytest.raises(MailboxMoving):
        await inbox.append(message(50), delivery=True)
    with pytest.raises(MailboxMoving):
        await inbox.store([1], ["\\Flagged"], "add")
    await store.release(ADDRESS)
    with pytest.raises(MailboxMoving):
        await store.deliver(ADDRESS, message(51))
    assert transfer.markers(store.data_dir, transfer.OUT_MARKER)[ADDRESS]["to"] == 2
    again = transfer.fence(store.data_dir, ADDRESS, to=2)
    assert again["fence"] == store.fenced[ADDRESS]["fence"]  # idempotent: a copy made under it stays valid
    await store.close()


@pytest.mark.parametrize("damage", ["truncated", "altered", "wrong fence"])
async def test_a_damaged_stream_puts_nothing_in_place(tmp_path, damage):
    source, _, stream, manifest = await moved(tmp_path)
    fence_id = manifest["fence"]
    if damage == "truncated":
        stream = stream[: len(stream) // 2]
    elif damage == "altered":
        index = stream.find(b"body 7")
        stream = stream[:index] + b"BODY 7" + stream[index + 6:]
    else:
        fence_id = "0" * 32
    with pytest.raises(transfer.TransferError):
        transfer.import_stream(tmp_path / "b", ADDRESS, io.BytesIO(stream), source=0, fence_id=fence_id)
    assert not transfer.mailbox_root(tmp_path / "b", ADDRESS).exists()
    assert [p.name for p in (tmp_path / "b").iterdir()] == []  # no staging left either
    await source.close()


async def test_a_stream_with_an_unsafe_path_is_refused(tmp_path):
    data = tmp_path / "b"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        info = tarfile.TarInfo("../escape")
        payload = b"x"
        info.size = 1
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(transfer.TransferError, match="unsafe"):
        transfer.import_stream(data, ADDRESS, io.BytesIO(out.getvalue()), source=0, fence_id="f")
    assert not (tmp_path / "escape").exists()


async def test_remove_and_sweep_leave_no_half_copies(tmp_path):
    source, _, stream, manifest = await moved(tmp_path)
    (source.data_dir / f"{transfer.STAGING}bob@example.com").mkdir()
    transfer.sweep(source.data_dir)
    assert not (source.data_dir / f"{transfer.STAGING}bob@example.com").exists()
    assert transfer.remove(source.data_dir, ADDRESS)
    assert [p.name for p in source.data_dir.iterdir()] == []
    await source.close()


async def test_mail_an_earlier_placement_left_on_the_target_is_never_overwritten(tmp_path):
    source, _, stream, manifest = await moved(tmp_path)
    left = Store(tmp_path / "b")
    await left.deliver(ADDRESS, message(1000))
    await left.close()
    with pytest.raises(transfer.TargetHoldsMail, match="not overwritten"):
        transfer.import_stream(tmp_path / "b", ADDRESS, io.BytesIO(stream), source=0, fence_id=manifest["fence"])
    again = Store(tmp_path / "b")
    assert (await again.usage(ADDRESS)).messages == 1
    await again.close()
    await source.close()
