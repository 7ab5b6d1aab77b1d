"""Checkpoints of session state on the pod's volume.

A checkpoint is a directory ``<sequence>-<UTC time>`` under the checkpoint root that holds
``data/`` and a ``manifest.json`` with the size and SHA-256 of every file. State from a session
hook is one file, ``data/sessions.json``. A session dir is packed into one file,
``data/files.pack``, the files back to back in manifest order, because creating thousands of small
files costs far more than writing one (the server is drained while a checkpoint runs). It is
written under a hidden temporary name, fsynced and then renamed into place, so a crash leaves
either a whole checkpoint or a temporary directory that the next start removes. Every checksum is
verified before a byte of a checkpoint is used.

Everything here blocks; the agent's server calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, TypeVar

from pydantic import ValidationError

from infercycle import errors
from infercycle.agent.protocol import CheckpointSummary, StateSource, WireModel

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"
HOOK_ENTRY = "sessions.json"
PACK_NAME = "files.pack"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# The sequence is zero-padded to 8 digits and grows past them; ids order by its value.
_CHECKPOINT_NAME = re.compile(r"^(\d{8,})-\d{8}T\d{6}Z$")
_TEMP_NAME = re.compile(r"^\.tmp-(\d{8,})-[0-9a-f]+$")
_CHUNK = 1 << 20
FSYNC_EACH_FILE_UP_TO = 32
_MAX_MANIFEST_BYTES = 64 << 20

log = logging.getLogger("infercycle.agent.store")
_T = TypeVar("_T")
Layout = Literal["files", "pack"]


class StoreError(errors.AgentSideError):
    """A checkpoint could not be written or used; ``message`` says why and what to do."""

    code = "checkpoint_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StateTooLargeError(StoreError):
    code = "state_too_large"


class StorageFullError(StoreError):
    code = "insufficient_storage"


class StorageReadOnlyError(StoreError):
    code = "checkpoint_dir_read_only"


class StorageNotWritableError(StoreError):
    code = "checkpoint_dir_not_writable"


class SessionDirUnstableError(StoreError):
    code = "session_dir_unstable"


class SessionDirUnreadableError(StoreError):
    code = "session_dir_unreadable"


class RestoreTargetError(StoreError):
    code = "restore_target_failed"


class CorruptCheckpointError(StoreError):
    code = "checkpoint_corrupt"

    def __init__(self, checkpoint_id: str, reason: str) -> None:
        super().__init__(f"checkpoint {checkpoint_id} is not usable: {reason}")
        self.checkpoint_id = checkpoint_id
        self.reason = reason


class NoValidCheckpointError(StoreError):
    code = "no_valid_checkpoint"

    def __init__(self, message: str, skipped: tuple[SkippedCheckpoint, ...] = ()) -> None:
        super().__init__(message)
        self.skipped = skipped


@dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint passed over on the way to an older, valid one."""

    checkpoint_id: str
    reason: str


class ManifestEntry(WireModel):
    path: str
    size_bytes: int
    sha256: str
    mode: int = 0o600
    mtime_ns: int | None = None
    offset: int | None = None


class Manifest(WireModel):
    format_version: int
    id: str
    pod_uid: str
    created_at: datetime
    boot_id: str
    created_boot_seconds: float
    source: StateSource
    layout: Layout = "files"
    entry_count: int
    total_size_bytes: int
    sha256: str
    entries: tuple[ManifestEntry, ...]

    def summary(self) -> CheckpointSummary:
        return CheckpointSummary(
            id=self.id,
            created_at=self.created_at,
            size_bytes=self.total_size_bytes,
            sha256=self.sha256,
            entries=self.entry_count,
        )


def state_too_large(size: int, limit: int, *, at_least: bool = False) -> StateTooLargeError:
    """The error for state above ``--max-size``; ``at_least`` when reading stopped at the limit."""
    amount = f"{'more than ' if at_least else ''}{format_size(size)} ({size} bytes)"
    msg = (
        f"the session state is {amount}, above the limit of {format_size(limit)} ({limit} "
        "bytes); nothing was written. Raise --max-size (INFERCYCLE_AGENT_MAX_SIZE) together with "
        "the session volume size, or keep less state in the server"
    )
    return StateTooLargeError(msg)


def checkpoint_digest(entries: Iterable[ManifestEntry]) -> str:
    """One SHA-256 over every file's path, size and digest: the checkpoint's checksum."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda item: item.path):
        digest.update(f"{entry.path}\0{entry.size_bytes}\0{entry.sha256}\n".encode())
    return digest.hexdigest()


def boot_id() -> str:
    """The kernel's boot id: process start times are comparable only within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def boot_seconds() -> float:
    """Seconds since boot, the clock that ``/proc/<pid>/stat`` start times use."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass
class _Staging:
    path: Path
    sequence: int
    directories: list[Path] = field(default_factory=list)
    committed: bool = False


@dataclass(frozen=True)
class _FileState:
    size: int
    mtime_ns: int
    inode: int
    mode: int


class CheckpointStore:
    """Writes, lists, verifies, loads and prunes checkpoints under one directory."""

    def __init__(
        self,
        root: Path,
        *,
        keep: int = 3,
        max_size_bytes: int = 256 << 20,
        pod_uid: str = "",
        snapshot_attempts: int = 5,
        before_commit: Callable[[Path], None] | None = None,
    ) -> None:
        if keep < 1:
            msg = f"keep must be at least 1, got {keep}"
            raise ValueError(msg)
        self.root = root
        self.keep = keep
        self.max_size_bytes = max_size_bytes
        self.pod_uid = pod_uid
        self.snapshot_attempts = max(1, snapshot_attempts)
        self._before_commit = before_commit
        self._lock = threading.Lock()

    # Writing

    def write_blob(self, data: bytes) -> Manifest:
        """Store the state a session hook returned as one file."""
        self._check_size(len(data))
        with self._lock, self._staging() as staging:
            target = staging.path / DATA_DIR / HOOK_ENTRY
            with _open_new(target) as fd:
                _write_all(fd, data)
                os.fsync(fd)
            entry = ManifestEntry(
                path=HOOK_ENTRY, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
            return self._commit(staging, "hook", "files", [entry])

    def write_snapshot(self, source: Path) -> Manifest:
        """Copy a session directory; retry while it changes under the copy."""
        with self._lock:
            for attempt in range(self.snapshot_attempts):
                before = _scan(source)
                self._check_size(sum(state.size for state in before.values()))
                with self._staging() as staging:
                    entries = self._pack(source, before, staging)
                    if entries is not None and _scan(source) == before:
                        return self._commit(staging, "dir", "pack", entries)
                log.info(
                    "session dir changed during the copy; copying again",
                    extra={"fields": {"sessionDir": str(source), "attempt": attempt + 1}},
                )
                time.sleep(0.05 * 2**attempt)
        msg = (
            f"the session dir {source} kept changing during {self.snapshot_attempts} copy "
            "attempts, so no consistent snapshot was possible; drain the server before the "
            "checkpoint (no requests in flight) or export the state through --session-hook"
        )
        raise SessionDirUnstableError(msg)

    def _check_size(self, size: int) -> None:
        if size > self.max_size_bytes:
            raise state_too_large(size, self.max_size_bytes)

    def _pack(
        self, source: Path, files: dict[str, _FileState], staging: _Staging
    ) -> list[ManifestEntry] | None:
        """Copy the files into one pack file; ``None`` when one changed or vanished meanwhile."""
        entries = []
        offset = 0
        base = os.fspath(source)
        with _open_new(staging.path / DATA_DIR / PACK_NAME) as fd:
            for relative, state in sorted(files.items()):
                try:
                    handle = open(os.path.join(base, relative), "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    return None
                except OSError as error:
                    raise _session_dir_error(error, source) from error
                digest = hashlib.sha256()
                size = 0
                with handle:
                    for chunk in _chunks(handle, partial(_session_dir_error, source=source)):
                        size += len(chunk)
                        if offset + size > self.max_size_bytes:
                            raise state_too_large(offset + size, self.max_size_bytes, at_least=True)
                        digest.update(chunk)
                        _write_all(fd, chunk)
                if size != state.size:
                    return None
                entries.append(
                    ManifestEntry(
                        path=relative,
                        size_bytes=size,
                        sha256=digest.hexdigest(),
                        mode=state.mode,
                        mtime_ns=state.mtime_ns,
                        offset=offset,
                    )
                )
                offset += size
            os.fsync(fd)
        return entries

    @contextmanager
    def _staging(self) -> Iterator[_Staging]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            sequence = self._next_sequence()
            path = self.root / f"{TEMP_PREFIX}{sequence:08d}-{secrets.token_hex(4)}"
            path.mkdir()
        except OSError as error:
            raise _storage_error(error, self.root) from error
        staging = _Staging(path=path, sequence=sequence)
        try:
            (path / DATA_DIR).mkdir()
            staging.directories.append(path / DATA_DIR)
            yield staging
        except OSError as error:
            _remove_quietly(path)
            raise _storage_error(error, self.root) from error
        except BaseException:
            _remove_quietly(path)
            raise
        else:
            if not staging.committed:
                _remove_quietly(path)

    def _commit(
        self,
        staging: _Staging,
        source: StateSource,
        layout: Layout,
        entries: list[ManifestEntry],
    ) -> Manifest:
        created = datetime.now(UTC)
        checkpoint_id = f"{staging.sequence:08d}-{created:%Y%m%dT%H%M%SZ}"
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            id=checkpoint_id,
            pod_uid=self.pod_uid,
            created_at=created,
            boot_id=boot_id(),
            created_boot_seconds=boot_seconds(),
            source=source,
            layout=layout,
            entry_count=len(entries),
            total_size_bytes=sum(entry.size_bytes for entry in entries),
            sha256=checkpoint_digest(entries),
            entries=tuple(entries),
        )
        with _open_new(staging.path / MANIFEST_NAME) as fd:
            _write_all(fd, manifest.model_dump_json(by_alias=True, indent=1).encode())
            os.fsync(fd)
        for directory in reversed(staging.directories):
            _fsync_dir(directory)
        _fsync_dir(staging.path)
        if self._before_commit is not None:
            self._before_commit(staging.path)
        os.rename(staging.path, self.root / checkpoint_id)
        staging.committed = True
        _fsync_dir(self.root)
        try:
            self._prune_locked()
        except OSError as error:
            log.warning(
                "could not delete old checkpoints",
                extra={"fields": {"checkpointDir": str(self.root), "error": str(error)}},
            )
        return manifest

    def _next_sequence(self) -> int:
        highest = 0
        for entry in _list_names(self.root):
            match = _CHECKPOINT_NAME.match(entry) or _TEMP_NAME.match(entry)
            if match:
                highest = max(highest, int(match.group(1)))
        return highest + 1

    # Listing and housekeeping

    def list_ids(self) -> list[str]:
        """Checkpoint ids, newest first."""
        numbered = [
            (int(match.group(1)), name)
            for name in _list_names(self.root)
            if (match := _CHECKPOINT_NAME.match(name))
        ]
        return [name for _, name in sorted(numbered, reverse=True)]

    def prune(self) -> list[str]:
        """Retire all but the newest ``keep`` checkpoints; the ids retired.

        Retiring is a rename into the trash, so it is quick whatever the size; ``empty_trash``
        deletes the files later, off the path of the checkpoint.
        """
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> list[str]:
        retired = []
        for checkpoint_id in self.list_ids()[self.keep :]:
            os.rename(self.root / checkpoint_id, self.root / f"{TRASH_PREFIX}{checkpoint_id}")
            retired.append(checkpoint_id)
        if retired:
            _fsync_dir(self.root)
            log.info(
                "retired old checkpoints",
                extra={"fields": {"checkpoints": retired, "keep": self.keep}},
            )
        return retired

    def empty_trash(self) -> int:
        """Delete retired checkpoints; how many there were."""
        names = [name for name in _list_names(self.root) if name.startswith(TRASH_PREFIX)]
        for name in names:
            shutil.rmtree(self.root / name, ignore_errors=True)
        return len(names)

    def cleanup_temp(self) -> list[str]:
        """Remove what an interrupted write left behind, and the trash; the names removed."""
        removed = []
        with self._lock:
            for name in _list_names(self.root):
                if name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                    shutil.rmtree(self.root / name, ignore_errors=True)
                    removed.append(name)
        if any(name.startswith(TEMP_PREFIX) for name in removed):
            log.warning(
                "removed the leftovers of an interrupted checkpoint",
                extra={"fields": {"checkpointDir": str(self.root), "removed": removed}},
            )
        return removed

    def latest_manifest(self) -> Manifest | None:
        """The newest checkpoint whose manifest reads (file checksums are not checked here)."""
        for checkpoint_id in self.list_ids():
            with suppress(CorruptCheckpointError):
                return self.read_manifest(checkpoint_id)
        return None

    def newest_verified_manifest(self) -> Manifest | None:
        """The newest checkpoint that passes full verification, file checksums included."""
        try:
            manifest, _ = self._first_valid(self.verify)
        except NoValidCheckpointError:
            return None
        return manifest

    # Reading

    def read_manifest(self, checkpoint_id: str) -> Manifest:
        path = self.root / checkpoint_id / MANIFEST_NAME
        try:
            with path.open("rb") as handle:
                raw = handle.read(_MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError as error:
            raise CorruptCheckpointError(checkpoint_id, "manifest.json is missing") from error
        except OSError as error:
            raise CorruptCheckpointError(
                checkpoint_id, f"manifest.json is unreadable: {error}"
            ) from error
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise CorruptCheckpointError(checkpoint_id, "manifest.json is implausibly large")
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as error:
            reason = f"manifest.json does not parse: {error.errors()[0]['msg']}"
            raise CorruptCheckpointError(checkpoint_id, reason) from error
        _check_manifest(checkpoint_id, manifest)
        return manifest

    def verify(self, checkpoint_id: str) -> Manifest:
        """The manifest, after checking that every file is there with its size and checksum."""
        manifest = self.read_manifest(checkpoint_id)
        self._check_tree(manifest)
        for entry, chunks in self._entry_chunks(manifest):
            digest = hashlib.sha256()
            size = 0
            for chunk in chunks:
                size += len(chunk)
                digest.update(chunk)
            _check_entry(checkpoint_id, entry, size, digest.hexdigest())
        return manifest

    def _entry_chunks(self, manifest: Manifest) -> Iterator[tuple[ManifestEntry, Iterator[bytes]]]:
        """Each entry with its bytes; consume one entry's chunks before asking for the next."""
        data = self.root / manifest.id / DATA_DIR
        if manifest.layout == "pack":
            with _open_checkpoint_file(manifest.id, data / PACK_NAME) as pack:
                for entry in manifest.entries:
                    yield (
                        entry,
                        _chunks(
                            pack,
                            partial(_unreadable_entry, manifest.id, PACK_NAME),
                            limit=entry.size_bytes,
                        ),
                    )
            return
        for entry in manifest.entries:
            with _open_checkpoint_file(manifest.id, data / entry.path) as handle:
                yield entry, _chunks(handle, partial(_unreadable_entry, manifest.id, entry.path))

    def load_blob(self, checkpoint_id: str) -> tuple[Manifest, bytes]:
        """The verified state of a checkpoint taken from a session hook."""
        manifest = self.read_manifest(checkpoint_id)
        if manifest.source != "hook" or manifest.entry_count != 1:
            reason = "it holds a session dir copy, and this agent restores through a session hook"
            raise CorruptCheckpointError(checkpoint_id, reason)
        self._check_tree(manifest)
        entry = manifest.entries[0]
        try:
            data = (self.root / checkpoint_id / DATA_DIR / entry.path).read_bytes()
        except OSError as error:
            raise CorruptCheckpointError(
                checkpoint_id, f"{entry.path} is unreadable: {error}"
            ) from error
        _check_entry(checkpoint_id, entry, len(data), hashlib.sha256(data).hexdigest())
        return manifest, data

    def restore_dir(self, checkpoint_id: str, target: Path) -> Manifest:
        """Replace ``target`` with a checkpoint's files, all at once or not at all.

        The files it replaces are moved aside; ``remove_previous_sessions`` deletes them.
        """
        manifest = self.read_manifest(checkpoint_id)
        if manifest.source != "dir":
            reason = "it holds session hook state, and this agent restores a session dir"
            raise CorruptCheckpointError(checkpoint_id, reason)
        self._check_tree(manifest)
        target = Path(os.path.realpath(target))
        _remove_restore_leftovers(target)
        staging = target.parent / f".{target.name}.restore-{secrets.token_hex(4)}"
        directories: list[Path] = [staging]
        sync_each = manifest.entry_count <= FSYNC_EACH_FILE_UP_TO
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            for entry, chunks in self._entry_chunks(manifest):
                destination = staging / entry.path
                _make_parents(destination.parent, staging, directories)
                size, sha256 = _write_file(
                    destination, chunks, mode=entry.mode, mtime_ns=entry.mtime_ns, sync=sync_each
                )
                _check_entry(checkpoint_id, entry, size, sha256)
            if not sync_each:
                _sync_file_system(staging)
            for directory in reversed(directories):
                _fsync_dir(directory)
            _swap_into_place(staging, target)
        except OSError as error:
            _remove_quietly(staging)
            msg = (
                f"restoring checkpoint {checkpoint_id} into {target} failed ({error}); the "
                "session dir was left as it was. Check that the session volume is writable and "
                "has room for the checkpoint"
            )
            raise RestoreTargetError(msg) from error
        except BaseException:
            _remove_quietly(staging)
            raise
        return manifest

    def remove_previous_sessions(self, target: Path) -> None:
        """Delete the session files that restores replaced (kept aside, off the restore path)."""
        target = Path(os.path.realpath(target))
        for name in _list_names(target.parent):
            if name.startswith(f".{target.name}.old-"):
                _remove_quietly(target.parent / name)

    def load_newest_blob(self) -> tuple[Manifest, bytes, tuple[SkippedCheckpoint, ...]]:
        """The newest valid hook checkpoint; corrupt ones are skipped with a warning."""
        (manifest, data), skipped = self._first_valid(self.load_blob)
        return manifest, data, skipped

    def restore_newest_into(self, target: Path) -> tuple[Manifest, tuple[SkippedCheckpoint, ...]]:
        """Restore the newest valid dir checkpoint into ``target``."""
        return self._first_valid(lambda checkpoint_id: self.restore_dir(checkpoint_id, target))

    def _first_valid(self, use: Callable[[str], _T]) -> tuple[_T, tuple[SkippedCheckpoint, ...]]:
        skipped: list[SkippedCheckpoint] = []
        with self._lock:
            ids = self.list_ids()
            for checkpoint_id in ids:
                try:
                    return use(checkpoint_id), tuple(skipped)
                except CorruptCheckpointError as error:
                    log.warning(
                        "skipping a checkpoint that failed verification; trying an older one",
                        extra={"fields": {"checkpoint": checkpoint_id, "reason": error.reason}},
                    )
                    skipped.append(SkippedCheckpoint(checkpoint_id, error.reason))
        if not ids:
            msg = f"there is no checkpoint in {self.root} yet; take one with POST /v1/checkpoint"
        else:
            reasons = "; ".join(f"{item.checkpoint_id}: {item.reason}" for item in skipped)
            msg = (
                f"none of the {len(ids)} checkpoints in {self.root} passed verification "
                f"({reasons}); take a new checkpoint"
            )
        raise NoValidCheckpointError(msg, tuple(skipped))

    def _check_tree(self, manifest: Manifest) -> None:
        data = self.root / manifest.id / DATA_DIR
        expected = {entry.path for entry in manifest.entries}
        found: set[str] = set()
        for directory, subdirectories, files in os.walk(data):
            for name in [*files, *subdirectories]:
                path = Path(directory) / name
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    reason = f"{path.relative_to(data)} is not a regular file or directory"
                    raise CorruptCheckpointError(manifest.id, reason)
            found.update((Path(directory) / name).relative_to(data).as_posix() for name in files)
        if manifest.layout == "pack":
            expected = {PACK_NAME}
            pack = data / PACK_NAME
            if pack.is_file() and pack.stat().st_size != manifest.total_size_bytes:
                reason = (
                    f"{PACK_NAME} has {pack.stat().st_size} bytes, the manifest says "
                    f"{manifest.total_size_bytes}"
                )
                raise CorruptCheckpointError(manifest.id, reason)
        missing = sorted(expected - found)
        extra = sorted(found - expected)
        if missing:
            raise CorruptCheckpointError(
                manifest.id, f"files are missing: {', '.join(missing[:5])}"
            )
        if extra:
            reason = f"files not in the manifest: {', '.join(extra[:5])}"
            raise CorruptCheckpointError(manifest.id, reason)


def _check_manifest(checkpoint_id: str, manifest: Manifest) -> None:
    if manifest.format_version != FORMAT_VERSION:
        reason = (
            f"manifest format {manifest.format_version} is not {FORMAT_VERSION}; it was written "
            "by another version of the agent"
        )
        raise CorruptCheckpointError(checkpoint_id, reason)
    if manifest.id != checkpoint_id:
        raise CorruptCheckpointError(checkpoint_id, f"its manifest names checkpoint {manifest.id}")
    paths = [entry.path for entry in manifest.entries]
    if len(set(paths)) != len(paths):
        raise CorruptCheckpointError(checkpoint_id, "the manifest lists a file twice")
    for path in paths:
        if not _is_safe_relative(path):
            raise CorruptCheckpointError(
                checkpoint_id, f"the manifest names an unsafe path {path!r}"
            )
    if manifest.entry_count != len(paths):
        raise CorruptCheckpointError(checkpoint_id, "the manifest's entry count does not match")
    if manifest.total_size_bytes != sum(entry.size_bytes for entry in manifest.entries):
        raise CorruptCheckpointError(checkpoint_id, "the manifest's total size does not match")
    if manifest.sha256 != checkpoint_digest(manifest.entries):
        raise CorruptCheckpointError(checkpoint_id, "the manifest's checksum does not match")
    if manifest.layout == "pack":
        offset = 0
        for entry in manifest.entries:
            if entry.offset != offset:
                raise CorruptCheckpointError(checkpoint_id, "the pack offsets do not line up")
            offset += entry.size_bytes
    elif manifest.source == "hook" and paths != [HOOK_ENTRY]:
        raise CorruptCheckpointError(checkpoint_id, f"a hook checkpoint holds only {HOOK_ENTRY}")


def _check_entry(checkpoint_id: str, entry: ManifestEntry, size: int, sha256: str) -> None:
    if size != entry.size_bytes:
        reason = f"{entry.path} has {size} bytes, the manifest says {entry.size_bytes}"
        raise CorruptCheckpointError(checkpoint_id, reason)
    if sha256 != entry.sha256:
        raise CorruptCheckpointError(checkpoint_id, f"{entry.path} fails its SHA-256 check")


def _is_safe_relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        bool(path)
        and "\0" not in path
        and not pure.is_absolute()
        and pure.as_posix() == path
        and all(part not in ("", ".", "..") for part in pure.parts)
    )


def _scan(source: Path) -> dict[str, _FileState]:
    """Every regular file under ``source`` by relative path, with what tells a change."""
    if not source.is_dir():
        msg = (
            f"the session dir {source} does not exist or is not a directory; check "
            "--session-dir and that the server's volume is mounted into the agent too"
        )
        raise SessionDirUnreadableError(msg)
    files: dict[str, _FileState] = {}
    skipped: list[str] = []
    pending = [("", os.fspath(source))]
    while pending:
        prefix, directory = pending.pop()
        try:
            listing = os.scandir(directory)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise _session_dir_error(error, source) from error
        with listing:
            for entry in listing:
                relative = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((f"{relative}/", entry.path))
                        continue
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    raise _session_dir_error(error, source) from error
                if stat.S_ISREG(info.st_mode):
                    files[relative] = _FileState(
                        size=info.st_size,
                        mtime_ns=info.st_mtime_ns,
                        inode=info.st_ino,
                        mode=stat.S_IMODE(info.st_mode),
                    )
                else:
                    skipped.append(relative)
    if skipped:
        log.warning(
            "session dir entries that are not regular files are not checkpointed",
            extra={"fields": {"sessionDir": str(source), "entries": sorted(skipped)[:10]}},
        )
    return files


def _unreadable_entry(checkpoint_id: str, path: str, error: OSError) -> StoreError:
    return CorruptCheckpointError(checkpoint_id, f"{path} is unreadable: {error}")


def _session_dir_error(error: OSError, source: Path) -> StoreError:
    msg = (
        f"reading the session dir {source} failed ({error}); check that the agent's user may "
        "read the server's files (same fsGroup) and that the volume is mounted"
    )
    return SessionDirUnreadableError(msg)


def _storage_error(error: OSError, root: Path) -> StoreError:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"the checkpoint volume at {root} is full ({reason}); nothing was kept of this "
            "checkpoint and the previous one is still valid. Enlarge sessionStore.size, lower "
            "--keep or --max-size, or keep less state in the server"
        )
    if error.errno == errno.EROFS:
        return StorageReadOnlyError(
            f"the checkpoint dir {root} is on a read-only file system ({reason}); mount the "
            "session volume read-write into the agent container (readOnly: false)"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return StorageNotWritableError(
            f"the agent may not write to the checkpoint dir {root} ({reason}); let the agent's "
            "user write there (pod securityContext fsGroup, or the directory's owner)"
        )
    return StoreError(f"writing a checkpoint under {root} failed: {error}")


def _chunks(
    handle: BinaryIO, read_error: Callable[[OSError], StoreError], limit: int | None = None
) -> Iterator[bytes]:
    """The handle's bytes in chunks, up to ``limit`` bytes when given."""
    remaining = limit
    while remaining is None or remaining > 0:
        want = _CHUNK if remaining is None else min(_CHUNK, remaining)
        try:
            chunk = handle.read(want)
        except OSError as error:
            raise read_error(error) from error
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


@contextmanager
def _open_checkpoint_file(checkpoint_id: str, path: Path) -> Iterator[BinaryIO]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise CorruptCheckpointError(
            checkpoint_id, f"{path.name} is unreadable: {error}"
        ) from error
    with handle:
        yield handle


def _write_file(
    path: Path, chunks: Iterable[bytes], *, mode: int, mtime_ns: int | None, sync: bool
) -> tuple[int, str]:
    """Write a new file from chunks, hashing them; its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with _open_new(path) as fd:
        for chunk in chunks:
            size += len(chunk)
            digest.update(chunk)
            _write_all(fd, chunk)
        os.fchmod(fd, mode & 0o777)
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        if sync:
            os.fsync(fd)
    return size, digest.hexdigest()


@contextmanager
def _open_new(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _make_parents(directory: Path, top: Path, created: list[Path]) -> None:
    missing = []
    while directory != top and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def _sync_file_system(path: Path) -> None:
    """Flush the whole file system holding ``path`` (``syncfs``): one journal commit for many
    files, where one fsync per file would cost a commit each."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            os.sync()
            return
        syncfs.argtypes = [ctypes.c_int]
        syncfs.restype = ctypes.c_int
        if int(syncfs(fd)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list_names(root: Path) -> list[str]:
    try:
        return os.listdir(root)
    except FileNotFoundError:
        return []


def _remove_quietly(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_restore_leftovers(target: Path) -> None:
    for name in _list_names(target.parent):
        if name.startswith((f".{target.name}.restore-", f".{target.name}.old-")):
            _remove_quietly(target.parent / name)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (``renameat2`` with ``RENAME_EXCHANGE``) where Linux can."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    result = int(
        renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_into_place(staging: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return
    if not target.is_dir():
        msg = f"the session dir {target} is not a directory; remove it or fix --session-dir"
        raise RestoreTargetError(msg)
    if os.path.ismount(target):
        msg = (
            f"the session dir {target} is a mount point, which cannot be replaced in one step; "
            "point --session-dir and the server at a subdirectory of the volume"
        )
        raise RestoreTargetError(msg)
    previous = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
    if _exchange(staging, target):
        os.rename(staging, previous)
    else:
        os.rename(target, previous)
        os.rename(staging, target)
    _fsync_dir(target.parent)
