"""The process's recordings: the I/O edge around each call's `CallRecording`.

    recordings = Recordings(archive, spool_dir, call_log, mode=settings.recording)
    await recordings.start()                       # also finishes spools a dead process left behind
    recording = recordings.begin(call_id, line, now_ms)   # None when this call is not recorded
    ... the call's tap feeds `recording` ...
    recordings.end(recording, now_ms)              # the rest happens after the call, off the loop
    await recordings.stop()

Nothing here touches a disk or the network on the event loop. Once a second one task collects every
call's new spool records (`CallRecording.take_spool`) and hands them, as one batch, to a spool thread
that appends them to each call's spool file. After the call a finishing thread lays the spool out as WAV
and FLAC (`bridge.recording.finish`) and moves or uploads them (`RecordingArchive`). The call log hears
"recording" when a recording begins, then "ready" with where it went, or "failed" with why: a full disk
or an unreachable bucket costs the recording, never the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from bridge.audio import AudioFormat
from bridge.carrier.webhook import record_requested
from bridge.recording.archive import ArchiveError, RecordingArchive, safe_name
from bridge.recording.call_recording import CallRecording
from bridge.recording.finish import FORMATS, RecordingFailed, render
from bridge.recording.spool import SpoolError, read_header

log = structlog.get_logger(__name__)

RecordingMode = Literal["off", "all", "requested"]
SPOOL_INTERVAL_S = 1.0
# Audio handed to the spool thread and not yet written: past this the disk is not keeping up, and the
# recording is given up rather than holding ever more of it in memory (1 MiB is about a minute of a
# G.711 call's two channels).
MAX_UNWRITTEN_BYTES = 16 * 1024 * 1024
SPOOL_SUFFIX = ".spool"


class RecordingLog(Protocol):
    """What the call log offers recordings (`bridge.calllog.CallRecorder.recording`)."""

    def recording(
        self,
        call_id: str,
        status: str,
        *,
        started_at: datetime | None = None,
        location: str | None = None,
        formats: tuple[str, ...] = (),
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None: ...


def recording_wanted(mode: RecordingMode, parameters: Mapping[str, str]) -> bool:
    """RECORDING=all records every call, requested only those whose webhook or outbound request set
    the `record` custom parameter to a yes (1, true, yes, on)."""
    return mode == "all" or (mode == "requested" and record_requested(parameters))


@dataclass(slots=True, eq=False)
class _Spool:
    recording: CallRecording
    path: Path
    started_at: datetime
    unwritten: int = 0  # bytes handed to the spool thread, not yet written
    failed: str | None = None
    ended: bool = False


class Recordings:
    def __init__(
        self,
        archive: RecordingArchive,
        spool_dir: Path,
        call_log: RecordingLog,
        *,
        mode: RecordingMode = "off",
        interval_s: float = SPOOL_INTERVAL_S,
    ) -> None:
        self.archive = archive
        self.spool_dir = spool_dir
        self.call_log = call_log
        self.mode = mode
        self.interval_s = interval_s
        self.failures = 0
        self._spools: dict[int, _Spool] = {}  # by id(recording): live, or ended and not yet stored
        self._files = _SpoolFiles()  # used only on the spool thread
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="recording-spool")
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="recording-finish")
        self._ticker: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()

    def wanted(self, parameters: Mapping[str, str]) -> bool:
        return recording_wanted(self.mode, parameters)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._ticker is None:
            if self.mode != "off":
                log.info("recordings.on", mode=self.mode, target=self.archive.target)
            self._ticker = asyncio.create_task(self._tick(), name="recording-spool")
            self._track(self._recover())

    async def stop(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - bounded like CallRecorder.stop
        """End what is still recording, then wait (at most `timeout`) until every recording is stored."""
        for spool in list(self._spools.values()):
            if not spool.ended:
                self.end(spool.recording)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._finishing:
            _, pending = await asyncio.wait(self._finishing, timeout=timeout)
            if pending:
                log.error("recordings.stop_timeout", unfinished=len(pending), timeout_s=timeout)
        self._writer.shutdown(wait=False, cancel_futures=True)
        self._finisher.shutdown(wait=False, cancel_futures=True)

    async def idle(self) -> None:
        """Wait until every ended recording was stored or failed."""
        while self._finishing:
            await asyncio.wait(list(self._finishing))

    # -- calls ----------------------------------------------------------------------------------

    def begin(
        self, call_id: str, line: AudioFormat, started_ms: float, started_at: datetime | None = None
    ) -> CallRecording:
        """A recording of the call from `started_ms` on (the call's clock; `started_at` is the same
        moment by the wall clock, default now). Whether to record is the caller's decision (`wanted`)."""
        started_at = started_at or datetime.now(UTC)
        recording = CallRecording(call_id, line, started_ms, started_at)
        path = self.spool_dir / f"{os.getpid()}-{id(recording):x}-{safe_name(call_id)}{SPOOL_SUFFIX}"
        self._spools[id(recording)] = _Spool(recording, path, started_at)
        self.call_log.recording(call_id, "recording", started_at=started_at)
        return recording

    def end(self, recording: CallRecording, at_ms: float | None = None) -> None:
        """The call is over (at `at_ms`, default its last audio): the recording is finished after its
        last spool write and stored, off the event loop."""
        spool = self._spools.get(id(recording))
        if spool is None or spool.ended:
            return
        spool.ended = True
        recording.finish(at_ms)
        self._track(self._finish(spool, recording.take_spool()))

    # -- internals ------------------------------------------------------------------------------

    def _track(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._write_due()

    def _write_due(self) -> None:
        batch = []
        for spool in self._spools.values():
            if spool.ended or spool.failed is not None:
                continue
            if spool.unwritten > MAX_UNWRITTEN_BYTES:
                self._fail(spool, f"the spool disk is not keeping up ({spool.unwritten} bytes unwritten)")
                continue
            data = spool.recording.take_spool()
            if data:
                spool.unwritten += len(data)
                batch.append((spool, data))
        if batch:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._writer, self._files.write, [(s.path, d) for s, d in batch])
            future.add_done_callback(lambda f: self._written(batch, f))

    def _written(self, batch: list[tuple[_Spool, bytes]], future: asyncio.Future[list[str | None]]) -> None:
        if future.cancelled():
            return
        for (spool, data), error in zip(batch, future.result(), strict=True):
            spool.unwritten -= len(data)
            if error is not None:
                self._fail(spool, error)

    def _fail(self, spool: _Spool, reason: str) -> None:
        if spool.failed is not None:
            return
        spool.failed = reason
        spool.recording.stop()
        self.failures += 1
        call_id = spool.recording.call_id
        log.warning("recording.failed", call_id=call_id, reason=reason)
        self.call_log.recording(call_id, "failed", started_at=spool.started_at, error=reason)

    async def _finish(self, spool: _Spool, last: bytes) -> None:
        loop = asyncio.get_running_loop()
        call_id = spool.recording.call_id
        try:
            if spool.failed is None:
                # Behind every earlier batch: the spool thread runs its jobs in order.
                [error] = await loop.run_in_executor(self._writer, self._files.write, [(spool.path, last)])
                if error is not None:
                    self._fail(spool, error)
            if spool.failed is None:
                location = self.archive.location_for(call_id, spool.started_at)
                try:
                    duration = await loop.run_in_executor(
                        self._finisher, _store, self.archive, spool.path, location
                    )
                except (RecordingFailed, ArchiveError) as exc:
                    self._fail(spool, str(exc))
                except Exception as exc:
                    # A bug, not the disk or the bucket: still never a recording left "recording" forever.
                    log.exception("recording.finish_crashed", call_id=call_id)
                    self._fail(spool, f"could not store the recording: {type(exc).__name__}: {exc}")
                else:
                    self._stored(call_id, spool.started_at, location, duration)
        finally:
            self._spools.pop(id(spool.recording), None)
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._writer, self._files.discard, spool.path)

    def _stored(self, call_id: str, started_at: datetime, location: str, duration_s: float) -> None:
        log.info("recording.stored", call_id=call_id, location=location, duration_s=duration_s)
        self.call_log.recording(
            call_id, "ready", started_at=started_at, location=location, formats=FORMATS, duration_s=duration_s
        )

    async def _recover(self) -> None:
        """Store the spools of calls a dead process was recording (this host, this spool directory):
        the call lost at most its last second of audio."""
        loop = asyncio.get_running_loop()
        try:
            orphans = await loop.run_in_executor(self._writer, self._files.adopt_orphans, self.spool_dir)
        except OSError as exc:
            log.warning("recordings.spool_dir_unreadable", spool_dir=str(self.spool_dir), error=repr(exc))
            return
        for path, call_id, started_at in orphans:
            location = self.archive.location_for(call_id, started_at)
            try:
                duration = await loop.run_in_executor(self._finisher, _store, self.archive, path, location)
            except (RecordingFailed, ArchiveError) as exc:
                self.failures += 1
                log.warning("recording.recovery_failed", call_id=call_id, reason=str(exc))
                self.call_log.recording(call_id, "failed", started_at=started_at, error=str(exc))
            else:
                self._stored(call_id, started_at, location, duration)
            finally:
                await loop.run_in_executor(self._writer, self._files.discard, path)


# -- the threads' side ------------------------------------------------------------------------------


class _SpoolFiles:
    """The open spool files, each locked while this process holds it (a spool nobody holds belongs to
    a process that died). Used only on the spool thread."""

    def __init__(self) -> None:
        self._open: dict[Path, int] = {}

    def write(self, batch: list[tuple[Path, bytes]]) -> list[str | None]:
        """Append each spool's records; for each, the error if it failed. One failing spool never
        stops the others."""
        errors: list[str | None] = []
        for path, data in batch:
            try:
                fd = self._open.get(path)
                if fd is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                    self._open[path] = fd
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                errors.append(f"could not write the spool {path}: {exc.strerror or exc}")
            else:
                errors.append(None)
        return errors

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fd = self._open.pop(path, None)
        if fd is not None:
            os.close(fd)

    def adopt_orphans(self, spool_dir: Path) -> list[tuple[Path, str, datetime]]:
        """Spools no living process holds, now held by this one: (path, call id, wall-clock start)."""
        found: list[tuple[Path, str, datetime]] = []
        if not spool_dir.is_dir():
            return found
        for path in sorted(spool_dir.glob(f"*{SPOOL_SUFFIX}")):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a living process is recording into it
                continue
            self._open[path] = fd
            try:
                with path.open("rb") as file:
                    header = read_header(file)
                found.append((path, header.call_id, datetime.fromisoformat(header.started_at)))
            except (OSError, SpoolError, ValueError) as exc:
                log.warning("recording.spool_unreadable", path=str(path), error=repr(exc))
                self.discard(path)
        return found


def _store(archive: RecordingArchive, spool_path: Path, location: str) -> float:
    """Render the spool beside it and put the files at `location`; the recording's length in seconds."""
    rendered = render(spool_path, spool_path.parent, spool_path.name.removesuffix(SPOOL_SUFFIX))
    try:
        archive.put(location, rendered.files)
    finally:
        for file in rendered.files.values():
            file.unlink(missing_ok=True)
    return rendered.duration_s
