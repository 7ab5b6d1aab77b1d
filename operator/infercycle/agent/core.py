"""What the agent does: checkpoint, restart, restore, and watch for the server coming back.

One operation runs at a time. A checkpoint, restart or restore asked for over HTTP while another
one runs is refused with 409 (the caller retries; the operator never runs two at once for one
pod, so a second request is a retry or a mistake, and waiting would only pile up connections).
The background restore waits its turn instead.

When restores happen on their own:

* Session hook: whenever a server process appears that started after the newest checkpoint was
  taken (and that was not restored before, which is remembered on the volume). A server that
  started earlier already holds that state or newer, so it is left alone.
* Session dir: right after this agent restarted the server (the operator checkpoints just before
  that), and whenever the session dir is missing or empty (a new pod). Files that a crashed server
  left behind are newer than any checkpoint and are never overwritten on its own.

``POST /v1/restore`` restores the newest valid checkpoint regardless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from infercycle import errors
from infercycle.agent.config import AgentConfig
from infercycle.agent.hook import HookError, SessionHook
from infercycle.agent.process import (
    ProcessDidNotExitError,
    ProcessError,
    ProcessInfo,
    ProcessMatcher,
    is_running,
    stop_process,
)
from infercycle.agent.protocol import (
    AgentStatus,
    CheckpointResult,
    CheckpointSummary,
    Operation,
    RestartResult,
    RestoreOutcome,
    RestoreResult,
    ServerProcess,
    WireModel,
)
from infercycle.agent.store import (
    CheckpointStore,
    Manifest,
    NoValidCheckpointError,
    SessionDirUnreadableError,
    SessionDirUnstableError,
    SkippedCheckpoint,
    StateTooLargeError,
    StorageFullError,
    StorageNotWritableError,
    StorageReadOnlyError,
    StoreError,
    boot_id,
)

log = logging.getLogger("infercycle.agent")
_T = TypeVar("_T")
RESTORE_MEMO = ".last-restore.json"

_STORE_STATUS: dict[type[StoreError], int] = {
    StateTooLargeError: 413,
    StorageFullError: 507,
    StorageReadOnlyError: 503,
    StorageNotWritableError: 503,
    SessionDirUnstableError: 503,
    SessionDirUnreadableError: 503,
    NoValidCheckpointError: 404,
}


class AgentOperationError(errors.AgentSideError):
    """An operation failed; carries the HTTP status, a stable code and an actionable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RestoreMemo(WireModel):
    """The last restore, kept on the volume so a restarted agent does not restore twice."""

    result: RestoreResult
    boot_id: str
    server_start_ticks: int | None = None


class OperationGate:
    """Lets one operation run at a time; HTTP callers are refused, background work waits."""

    def __init__(self) -> None:
        self.current: Operation | None = None
        self.started_at: datetime | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def try_enter(self, name: Operation) -> bool:
        if self.current is not None:
            return False
        self.current = name
        self.started_at = datetime.now(UTC)
        self._idle.clear()
        return True

    async def enter(self, name: Operation) -> None:
        while not self.try_enter(name):
            await self._idle.wait()

    def leave(self) -> None:
        self.current = None
        self.started_at = None
        self._idle.set()


def _error_from(error: StoreError | HookError | ProcessError) -> AgentOperationError:
    if isinstance(error, StoreError):
        status = next(
            (code for kind, code in _STORE_STATUS.items() if isinstance(error, kind)), 500
        )
    elif isinstance(error, HookError):
        status = 502
    else:
        status = 504 if isinstance(error, ProcessDidNotExitError) else 500
    return AgentOperationError(status, error.code, error.message)


def _milliseconds(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        store: CheckpointStore,
        matcher: ProcessMatcher,
        hook: SessionHook | None,
    ) -> None:
        if (hook is None) == (config.session_dir is None):
            msg = "the agent needs exactly one state source: a session hook or a session dir"
            raise ValueError(msg)
        self._config = config
        self._store = store
        self._matcher = matcher
        self._hook = hook
        self._session_dir = config.session_dir
        self._boot_id = boot_id()
        self._gate = OperationGate()
        self._last_checkpoint: CheckpointSummary | None = None
        self._memo: RestoreMemo | None = None
        self._server: ProcessInfo | None = None
        self._seen: tuple[int, int] | None = None
        self._observed = False
        self._ambiguous: tuple[int, ...] = ()
        self._pending_dir_restore: ProcessInfo | None = None
        self._wake = asyncio.Event()
        self._hook_restore: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # Lifecycle

    async def start(self) -> None:
        """Clean up after an interrupted checkpoint and read what the volume holds."""
        try:
            await asyncio.to_thread(self._config.checkpoint_dir.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(self._store.cleanup_temp)
        except OSError as error:
            log.warning(
                "the checkpoint dir is not usable; checkpoints will fail until it is",
                extra={
                    "fields": {
                        "checkpointDir": str(self._config.checkpoint_dir),
                        "error": str(error),
                    }
                },
            )
        # Verified in full: a newest checkpoint whose files were damaged is not reported as the
        # last one (a restore would skip it too).
        latest = await asyncio.to_thread(self._store.newest_verified_manifest)
        self._last_checkpoint = latest.summary() if latest is not None else None
        self._memo = await asyncio.to_thread(self._read_memo)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _exclusive(
        self, name: Operation, operation: Callable[[], Awaitable[_T]], *, wait: bool = False
    ) -> _T:
        """Run ``operation`` alone; it finishes even when the caller gives up waiting for it."""
        if wait:
            await self._gate.enter(name)
        elif not self._gate.try_enter(name):
            raise self._busy(name)

        async def guarded() -> _T:
            try:
                return await operation()
            finally:
                self._gate.leave()

        return await asyncio.shield(self._spawn(guarded()))

    def _busy(self, requested: Operation) -> AgentOperationError:
        current = self._gate.current or "operation"
        started = self._gate.started_at
        age = f" {(datetime.now(UTC) - started).total_seconds():.1f}s ago" if started else ""
        message = (
            f"a {current} started{age} is still running, so the {requested} was not started; "
            "retry once GET /v1/status shows no operation in progress"
        )
        return AgentOperationError(409, f"{current}_in_progress", message)

    # Checkpoint

    async def checkpoint(self) -> CheckpointResult:
        return await self._exclusive("checkpoint", self._checkpoint)

    async def _checkpoint(self) -> CheckpointResult:
        started = time.monotonic()
        try:
            if self._hook is not None:
                data = await self._hook.fetch()
                manifest = await asyncio.to_thread(self._store.write_blob, data)
            else:
                assert self._session_dir is not None
                manifest = await asyncio.to_thread(self._store.write_snapshot, self._session_dir)
        except (StoreError, HookError) as error:
            log.error(
                "checkpoint failed",
                extra={"fields": {"error": error.code, "detail": error.message}},
            )
            raise _error_from(error) from error
        self._last_checkpoint = manifest.summary()
        self._spawn(self._housekeeping(self._store.empty_trash))
        result = CheckpointResult(
            id=manifest.id,
            sha256=manifest.sha256,
            size_bytes=manifest.total_size_bytes,
            entries=manifest.entry_count,
            duration_ms=_milliseconds(started),
            created_at=manifest.created_at,
        )
        log.info("checkpoint written", extra={"fields": result.to_wire()})
        return result

    # Restart

    async def restart(self) -> RestartResult:
        return await self._exclusive("restart", self._restart)

    async def _restart(self) -> RestartResult:
        target = await self._find_single_server()
        log.info(
            "stopping the server process for an in-place restart",
            extra={"fields": {"pid": target.pid, "gracePeriodSeconds": self._config.grace_period}},
        )
        try:
            outcome = await stop_process(target, self._config.grace_period)
        except ProcessError as error:
            log.error(
                "restart failed", extra={"fields": {"error": error.code, "detail": error.message}}
            )
            raise _error_from(error) from error
        self._server = None
        if self._session_dir is not None:
            self._pending_dir_restore = target
        self._wake.set()
        result = RestartResult(
            pid=outcome.pid,
            signal="SIGKILL" if outcome.signal == "SIGKILL" else "SIGTERM",
            duration_ms=round(outcome.duration_seconds * 1000),
            grace_period_seconds=self._config.grace_period,
        )
        log.info("server process stopped", extra={"fields": result.to_wire()})
        return result

    async def _find_single_server(self) -> ProcessInfo:
        found = await asyncio.to_thread(self._matcher.find)
        pattern = self._matcher.pattern
        if not found:
            message = (
                f"no process matches --server-process {pattern!r} (by process name or command "
                "line); check the pattern, and that the pod has shareProcessNamespace: true so "
                "the agent can see the server container"
            )
            raise AgentOperationError(404, "server_process_not_found", message)
        if len(found) > 1:
            pids = ", ".join(str(process.pid) for process in found)
            message = (
                f"{len(found)} unrelated processes match --server-process {pattern!r} (pids "
                f"{pids}); make the pattern specific to the server so the agent stops the "
                "right one"
            )
            raise AgentOperationError(409, "server_process_ambiguous", message)
        return found[0]

    # Restore

    async def restore(self) -> RestoreResult:
        """Restore the newest valid checkpoint now, whatever the rules for automatic restores."""

        async def forced() -> RestoreResult:
            found = await asyncio.to_thread(self._matcher.find)
            process = found[0] if len(found) == 1 else None
            return await self._apply_restore(process, "requested over HTTP")

        return await self._exclusive("restore", forced)

    async def _apply_restore(self, process: ProcessInfo | None, reason: str) -> RestoreResult:
        """Give back the newest valid checkpoint; records the outcome, raises on failure."""
        started = time.monotonic()
        pid = process.pid if process is not None else None
        try:
            if self._hook is not None:
                manifest, data, skipped = await asyncio.to_thread(self._store.load_newest_blob)
                await self._hook.push(data)
            else:
                assert self._session_dir is not None
                manifest, skipped = await asyncio.to_thread(
                    self._store.restore_newest_into, self._session_dir
                )
        except NoValidCheckpointError as error:
            outcome: RestoreOutcome = "failed" if error.skipped else "none"
            await self._record(
                RestoreResult(
                    result=outcome,
                    message=error.message,
                    at=datetime.now(UTC),
                    duration_ms=_milliseconds(started),
                    server_pid=pid,
                    skipped=tuple(item.checkpoint_id for item in error.skipped),
                ),
                process,
            )
            raise _error_from(error) from error
        except (StoreError, HookError) as error:
            await self._record(
                RestoreResult(
                    result="failed",
                    message=error.message,
                    at=datetime.now(UTC),
                    duration_ms=_milliseconds(started),
                    server_pid=pid,
                ),
                process,
            )
            raise _error_from(error) from error
        if skipped or self._last_checkpoint is None:
            self._last_checkpoint = manifest.summary()  # the newer ones failed verification
        if self._session_dir is not None:
            self._spawn(self._housekeeping(self._store.remove_previous_sessions, self._session_dir))
        return await self._record(
            RestoreResult(
                result="restored",
                message=_restored_message(manifest, skipped, reason),
                at=datetime.now(UTC),
                checkpoint_id=manifest.id,
                duration_ms=_milliseconds(started),
                server_pid=pid,
                skipped=tuple(item.checkpoint_id for item in skipped),
            ),
            process,
        )

    async def _housekeeping(self, job: Callable[..., object], *args: object) -> None:
        """Delete what an operation set aside, after it answered."""
        try:
            await asyncio.to_thread(job, *args)
        except OSError as error:
            log.warning("housekeeping failed", extra={"fields": {"error": str(error)}})

    async def _record(self, result: RestoreResult, process: ProcessInfo | None) -> RestoreResult:
        memo = RestoreMemo(
            result=result,
            boot_id=self._boot_id,
            server_start_ticks=process.start_ticks if process is not None else None,
        )
        self._memo = memo
        level = logging.INFO if result.result in ("restored", "skipped", "none") else logging.ERROR
        fields = result.to_wire()
        fields["detail"] = fields.pop("message")
        log.log(level, f"restore {result.result}", extra={"fields": fields})
        await asyncio.to_thread(self._write_memo, memo)
        return result

    def _memo_paths(self) -> list[Path]:
        """Where the last restore is recorded: the volume, and the state dir when there is one
        (off the volume, so a full or read-only volume cannot lose the record)."""
        paths = [self._config.checkpoint_dir / RESTORE_MEMO]
        if self._config.state_dir is not None:
            paths.append(self._config.state_dir / RESTORE_MEMO)
        return paths

    def _read_memo(self) -> RestoreMemo | None:
        """The newest record of the places it is kept."""
        found: list[RestoreMemo] = []
        for path in self._memo_paths():
            try:
                found.append(RestoreMemo.model_validate_json(path.read_bytes()))
            except (OSError, ValueError):
                continue
        return max(found, key=lambda memo: memo.result.at, default=None)

    def _write_memo(self, memo: RestoreMemo) -> None:
        failures: dict[str, str] = {}
        for path in self._memo_paths():
            try:
                _write_atomically(path, memo.model_dump_json(by_alias=True).encode())
            except OSError as error:
                failures[str(path)] = str(error)
        if not failures:
            return
        kept = len(failures) < len(self._memo_paths())
        log.log(
            logging.WARNING if kept else logging.ERROR,
            "could not record the restore in every place"
            if kept
            else "could not record the restore anywhere: a restarted agent may restore again; "
            "free the volume or give the agent a writable --state-dir",
            extra={"fields": {"failures": failures}},
        )

    def _already_restored(self, process: ProcessInfo) -> bool:
        memo = self._memo
        return (
            memo is not None
            and memo.result.result == "restored"
            and memo.boot_id == self._boot_id
            and memo.result.server_pid == process.pid
            and memo.server_start_ticks == process.start_ticks
        )

    def _started_before(self, process: ProcessInfo, manifest: Manifest) -> bool:
        """Whether the process was already running when the checkpoint was taken."""
        return (
            manifest.boot_id == self._boot_id
            and process.start_boot_seconds <= manifest.created_boot_seconds
        )

    async def _skip(self, process: ProcessInfo | None, message: str) -> None:
        await self._record(
            RestoreResult(
                result="skipped",
                message=message,
                at=datetime.now(UTC),
                server_pid=process.pid if process is not None else None,
            ),
            process,
        )

    async def _restore_into_new_server(self, process: ProcessInfo) -> None:
        """Hook source: wait until the new server's hook answers, then give the state back."""
        if self._already_restored(process):
            log.info("server process was restored before", extra={"fields": {"pid": process.pid}})
            return
        latest = await asyncio.to_thread(self._store.latest_manifest)
        if latest is None:
            await self._record(
                RestoreResult(
                    result="none",
                    message="there is no checkpoint yet; the server starts with empty state",
                    at=datetime.now(UTC),
                    server_pid=process.pid,
                ),
                process,
            )
            return
        if self._started_before(process, latest):
            await self._skip(
                process,
                f"server process {process.pid} was running when checkpoint {latest.id} was "
                "taken, so it holds that state or newer; nothing was restored",
            )
            return
        assert self._hook is not None
        deadline = time.monotonic() + self._config.restore_timeout
        while not await self._hook.is_ready():
            if not is_running(process):
                log.info(
                    "server process exited before its session hook answered",
                    extra={"fields": {"pid": process.pid}},
                )
                return
            if time.monotonic() >= deadline:
                message = (
                    f"the session hook {self._hook.url} did not answer within "
                    f"{self._config.restore_timeout:.0f}s of server process {process.pid} "
                    "starting; raise --restore-timeout if the server loads slowly, or restore "
                    "later with POST /v1/restore"
                )
                await self._record(
                    RestoreResult(
                        result="failed",
                        message=message,
                        at=datetime.now(UTC),
                        server_pid=process.pid,
                    ),
                    process,
                )
                return
            await asyncio.sleep(0.1)
        with suppress(AgentOperationError):
            await self._exclusive(
                "restore",
                lambda: self._apply_restore(process, "the server process started"),
                wait=True,
            )

    async def _restore_dir_after_restart(
        self, stopped: ProcessInfo, process: ProcessInfo | None
    ) -> None:
        latest = await asyncio.to_thread(self._store.latest_manifest)
        if latest is not None and self._started_before(stopped, latest):
            reason = "the server process was restarted"
        elif latest is None:
            reason = "the server process was restarted (no checkpoint yet)"
        else:
            await self._skip(
                process,
                f"the newest checkpoint {latest.id} is older than the server process "
                f"{stopped.pid} that was restarted, so the session dir holds newer state; "
                "the files were kept. Take a checkpoint before restarting",
            )
            return
        with suppress(AgentOperationError):
            await self._exclusive(
                "restore", lambda: self._apply_restore(process, reason), wait=True
            )

    async def _restore_dir_if_empty(self, process: ProcessInfo | None) -> None:
        assert self._session_dir is not None
        if not await asyncio.to_thread(_is_missing_or_empty, self._session_dir):
            return
        if await asyncio.to_thread(self._store.latest_manifest) is None:
            return
        with suppress(AgentOperationError):
            await self._exclusive(
                "restore",
                lambda: self._apply_restore(process, "the session dir was empty"),
                wait=True,
            )

    # Watching the server

    async def watch(self) -> None:
        """Follow the server process and restore into it; runs until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self._observe()
            except Exception:
                log.exception("watching the server process failed; trying again")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_interval)

    async def _observe(self) -> None:
        found = await asyncio.to_thread(self._matcher.find)
        process = found[0] if len(found) == 1 else None
        self._warn_if_ambiguous(found)
        self._server = process
        identity = process.identity if process is not None else None
        first = not self._observed
        self._observed = True
        if self._hook is not None:
            if process is not None and identity != self._seen:
                self._seen = identity
                if self._hook_restore is not None:
                    self._hook_restore.cancel()
                self._hook_restore = self._spawn(self._restore_into_new_server(process))
            return
        stopped = self._pending_dir_restore
        if stopped is not None:
            self._pending_dir_restore = None
            self._seen = identity
            await self._restore_dir_after_restart(stopped, process)
        elif first or identity != self._seen:
            self._seen = identity
            await self._restore_dir_if_empty(process)

    def _warn_if_ambiguous(self, found: list[ProcessInfo]) -> None:
        pids = tuple(process.pid for process in found) if len(found) > 1 else ()
        if pids and pids != self._ambiguous:
            log.warning(
                "several unrelated processes match --server-process; make it more specific",
                extra={"fields": {"pattern": self._matcher.pattern, "pids": list(pids)}},
            )
        self._ambiguous = pids

    # Status

    async def status(self) -> AgentStatus:
        found = await asyncio.to_thread(self._matcher.find)
        server = found[0] if len(found) == 1 else None
        count = len(await asyncio.to_thread(self._store.list_ids))
        current = self._gate.current
        return AgentStatus(
            source=self._config.source,
            pod_uid=self._config.pod_uid,
            server=ServerProcess(
                found=server is not None,
                pid=server.pid if server is not None else None,
                started_at=server.started_at() if server is not None else None,
            ),
            operation=current,
            operation_started_at=self._gate.started_at,
            checkpoint_in_progress=current == "checkpoint",
            restart_in_progress=current == "restart",
            restore_in_progress=current == "restore",
            last_checkpoint=self._last_checkpoint,
            last_restore=self._memo.result if self._memo is not None else None,
            checkpoints=count,
        )


def _restored_message(
    manifest: Manifest, skipped: tuple[SkippedCheckpoint, ...], reason: str
) -> str:
    message = (
        f"restored checkpoint {manifest.id} ({manifest.entry_count} files, "
        f"{manifest.total_size_bytes} bytes) because {reason}"
    )
    if skipped:
        passed = "; ".join(f"{item.checkpoint_id}: {item.reason}" for item in skipped)
        message += f"; skipped newer checkpoints that failed verification: {passed}"
    return message


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _is_missing_or_empty(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False
