from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from infercycle.agent.store import (
    CheckpointStore,
    CorruptCheckpointError,
    NoValidCheckpointError,
    SessionDirUnstableError,
    StateTooLargeError,
)


def state(sessions: int, tag: str = "a") -> bytes:
    return json.dumps(
        {"sessions": {f"{tag}{index}": {"turns": index} for index in range(sessions)}}
    ).encode()


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def flip_byte(path: Path, offset: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_blob_round_trip_is_verified(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", pod_uid="uid-1")
    written = store.write_blob(state(5))

    assert store.list_ids() == [written.id]
    assert store.verify(written.id) == written
    manifest, data = store.load_blob(written.id)
    assert data == state(5)
    assert manifest.pod_uid == "uid-1"
    assert manifest.entry_count == 1
    assert manifest.total_size_bytes == len(state(5))
    assert manifest.created_at.tzinfo is not None
    assert [entry.name for entry in (tmp_path / "ckpt").iterdir()] == [written.id]


def test_keeps_only_the_newest_k(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    ids = [store.write_blob(state(index + 1)).id for index in range(4)]

    assert store.list_ids() == [ids[3], ids[2]]
    assert store.empty_trash() == 2
    assert sorted(path.name for path in (tmp_path / "ckpt").iterdir()) == sorted(ids[2:])


def test_flipped_byte_is_caught_and_the_older_checkpoint_used(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    older = store.write_blob(state(3, "old"))
    newer = store.write_blob(state(3, "new"))
    flip_byte(tmp_path / "ckpt" / newer.id / "data" / "sessions.json")

    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        store.verify(newer.id)
    manifest, data, skipped = store.load_newest_blob()
    assert manifest.id == older.id
    assert data == state(3, "old")
    assert [item.checkpoint_id for item in skipped] == [newer.id]


def test_checkpoint_without_manifest_is_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    older = store.write_blob(state(2, "old"))
    newer = store.write_blob(state(2, "new"))
    (tmp_path / "ckpt" / newer.id / "manifest.json").unlink()

    manifest, _, skipped = store.load_newest_blob()
    assert manifest.id == older.id
    assert skipped[0].reason == "manifest.json is missing"


def test_tampered_manifest_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    written = store.write_blob(state(2))
    path = tmp_path / "ckpt" / written.id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["entries"][0]["path"] = "../../escape.json"
    path.write_text(json.dumps(manifest))

    with pytest.raises(NoValidCheckpointError, match="unsafe path"):
        store.load_newest_blob()


def test_state_above_the_limit_writes_nothing(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", max_size_bytes=100)

    with pytest.raises(StateTooLargeError, match="--max-size"):
        store.write_blob(b"{" + b" " * 200 + b"}")
    assert store.list_ids() == []
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").iterdir())


def test_dir_snapshot_restores_all_at_once(tmp_path: Path) -> None:
    source = tmp_path / "sessions"
    (source / "nested").mkdir(parents=True)
    (source / "a.json").write_text('{"a": 1}')
    (source / "nested" / "b.json").write_text('{"b": 2}')
    os.chmod(source / "a.json", 0o640)
    original = tree(source)
    store = CheckpointStore(tmp_path / "ckpt")
    written = store.write_snapshot(source)
    assert written.entry_count == 2

    (source / "a.json").write_text("changed")
    (source / "c.json").write_text("new file")
    manifest, skipped = store.restore_newest_into(source)

    assert manifest.id == written.id
    assert skipped == ()
    assert tree(source) == original
    assert (source / "a.json").stat().st_mode & 0o777 == 0o640
    store.remove_previous_sessions(source)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt", "sessions"]


def test_restore_into_a_missing_dir_creates_it(tmp_path: Path) -> None:
    source = tmp_path / "sessions"
    source.mkdir()
    (source / "x.json").write_text("x")
    store = CheckpointStore(tmp_path / "ckpt")
    store.write_snapshot(source)
    (source / "x.json").unlink()
    source.rmdir()

    store.restore_newest_into(source)
    assert tree(source) == {"x.json": b"x"}


def test_corrupt_dir_checkpoint_leaves_the_target_untouched(tmp_path: Path) -> None:
    source = tmp_path / "sessions"
    source.mkdir()
    (source / "x.json").write_text("x" * 100)
    store = CheckpointStore(tmp_path / "ckpt")
    written = store.write_snapshot(source)
    flip_byte(tmp_path / "ckpt" / written.id / "data" / "files.pack", offset=50)
    (source / "x.json").write_text("live")

    with pytest.raises(NoValidCheckpointError, match="SHA-256"):
        store.restore_newest_into(source)
    assert tree(source) == {"x.json": b"live"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt", "sessions"]


def test_dir_that_keeps_changing_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "sessions"
    source.mkdir()
    busy = source / "busy.json"
    busy.write_text("0")
    stop = threading.Event()

    def keep_writing() -> None:
        counter = 0
        while not stop.is_set():
            counter += 1
            busy.write_text(str(counter) * 1000)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        store = CheckpointStore(tmp_path / "ckpt", snapshot_attempts=3)
        with pytest.raises(SessionDirUnstableError, match="kept changing"):
            store.write_snapshot(source)
    finally:
        stop.set()
        writer.join()
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_cleanup_removes_interrupted_writes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    kept = store.write_blob(state(1))
    leftover = tmp_path / "ckpt" / ".tmp-00000009-abcd"
    (leftover / "data").mkdir(parents=True)

    assert store.cleanup_temp() == [leftover.name]
    assert store.list_ids() == [kept.id]
    assert store.write_blob(state(2)).id.startswith("00000002-")


def test_truncated_pack_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "sessions"
    source.mkdir()
    for index in range(3):
        (source / f"{index}.json").write_text(str(index) * 100)
    store = CheckpointStore(tmp_path / "ckpt")
    written = store.write_snapshot(source)
    assert store.verify(written.id).layout == "pack"
    pack = tmp_path / "ckpt" / written.id / "data" / "files.pack"
    pack.write_bytes(pack.read_bytes()[:-10])

    with pytest.raises(CorruptCheckpointError, match=r"files\.pack has 290 bytes"):
        store.verify(written.id)


def test_checkpoint_ids_past_eight_digits_are_listed_restored_and_pruned(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    store = CheckpointStore(root, keep=2)
    first = store.write_blob(state(1))
    # The sequence comes from the names on the volume: jump it to the last 8-digit value.
    high = "99999999" + first.id[len("00000001") :]
    os.rename(root / first.id, root / high)
    newest = store.write_blob(state(2))

    assert newest.id.startswith("100000000-")
    assert store.list_ids()[0] == newest.id  # by sequence value, not by text
    manifest, data = store.load_newest_blob()[:2]
    assert (manifest.id, data) == (newest.id, state(2))
    assert store.newest_verified_manifest() == newest
    store.write_blob(state(3))
    store.prune()
    assert newest.id in store.list_ids()
    assert high not in store.list_ids()


def test_newest_verified_manifest_passes_over_damaged_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=3)
    older = store.write_blob(state(3))
    newer = store.write_blob(state(4))
    flip_byte(next((tmp_path / "ckpt" / newer.id / "data").iterdir()))

    assert store.latest_manifest() == newer  # the manifest alone still reads
    assert store.newest_verified_manifest() == older
