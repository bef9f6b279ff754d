"""Where finished recordings live: a directory, or an S3-compatible bucket. Blocking; call from threads.

A recording's *location* is an absolute URI of its files without the extension, kept in the call log:
`file:///var/lib/bridge/recordings/2025/11/23/CA123` or `s3://bucket/prefix/2025/11/23/CA123`, with
`.wav`, `.flac` and `.peaks` beside each other. Reads and deletes follow the stored location, not
today's settings, so a recording made before RECORDING_URL changed is still served, and still goes
when its call does.

S3 credentials, region and the rest come from boto3's default chain (environment, shared config and
credentials files, instance or container roles); `endpoint_url` points it at an S3-compatible service.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

READ_CHUNK = 256 * 1024
CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "peaks": "application/json"}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ArchiveError(Exception):
    """Storing, reading or deleting failed; str() says where and why."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    size: int
    etag: str  # a strong validator, quoted
    last_modified: datetime


def safe_name(text: str) -> str:
    """`text` with anything but letters, digits, '.', '_' and '-' made '_': fit for a file name."""
    return _UNSAFE.sub("_", text)[:80] or "call"


def recording_stem(call_id: str, started_at: datetime) -> str:
    """`2025/11/23/CA123`: a day's recordings together; a call id unsafe in a path or key is spelled
    safely, with a hash of the original so two ids never meet."""
    safe = safe_name(call_id)
    if safe != call_id:
        safe += "-" + hashlib.sha256(call_id.encode()).hexdigest()[:12]
    return f"{started_at.astimezone(UTC):%Y/%m/%d}/{safe}"


class RecordingArchive:
    def __init__(self, directory: Path, s3_url: str = "", s3_endpoint_url: str = "") -> None:
        """New recordings go to `s3_url` (s3://bucket/prefix) when set, else under `directory`."""
        self.directory = directory.expanduser().resolve()
        self.s3_url = s3_url.rstrip("/")
        self.s3_endpoint_url = s3_endpoint_url
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def target(self) -> str:
        """Where new recordings go, for logs and errors."""
        return self.s3_url or str(self.directory)

    def location_for(self, call_id: str, started_at: datetime) -> str:
        stem = recording_stem(call_id, started_at)
        if self.s3_url:
            return f"{self.s3_url}/{stem}"
        return (self.directory / stem).as_uri()

    # -- blocking operations --------------------------------------------------------------------

    def put(self, location: str, files: dict[str, Path]) -> None:
        """Move each local file (format -> path) to the location. Raises ArchiveError."""
        scheme, where = _parse(location)
        try:
            if scheme == "file":
                where.parent.mkdir(parents=True, exist_ok=True)
                for fmt, path in files.items():
                    shutil.move(path, where.with_name(f"{where.name}.{fmt}"))
                return
            bucket, key = where
            client = self._s3()
            for fmt, path in files.items():
                client.upload_file(
                    str(path), bucket, f"{key}.{fmt}", ExtraArgs={"ContentType": CONTENT_TYPES[fmt]}
                )
        except Exception as exc:
            # What did get there is of no use without the rest, and nothing in the log points to it.
            with contextlib.suppress(ArchiveError):
                self.delete(location, tuple(files))
            raise ArchiveError(f"could not store the recording at {location}: {_describe(exc)}") from exc

    def stat(self, location: str, fmt: str) -> StoredFile | None:
        """Size and validators of one format's file; None when it is not there."""
        scheme, where = _parse(location)
        try:
            if scheme == "file":
                path = where.with_name(f"{where.name}.{fmt}")
                try:
                    st = path.stat()
                except FileNotFoundError:
                    return None
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                return StoredFile(st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', modified)
            bucket, key = where
            try:
                head = self._s3().head_object(Bucket=bucket, Key=f"{key}.{fmt}")
            except Exception as exc:
                if _s3_status(exc) == 404:
                    return None
                raise
            modified = head["LastModified"].astimezone(UTC)
            return StoredFile(int(head["ContentLength"]), str(head["ETag"]), modified)
        except Exception as exc:
            raise ArchiveError(f"could not read the recording at {location}: {_describe(exc)}") from exc

    def read(self, location: str, fmt: str, start: int, length: int) -> Iterator[bytes]:
        """Bytes [start, start + length) of one format's file, in chunks. Close the iterator when done
        early (it holds a file or a connection)."""
        scheme, where = _parse(location)
        if length <= 0:
            return
        if scheme == "file":
            try:
                file = where.with_name(f"{where.name}.{fmt}").open("rb")
            except OSError as exc:
                raise ArchiveError(f"could not read the recording at {location}: {_describe(exc)}") from exc
            with file:
                file.seek(start)
                left = length
                while left > 0 and (chunk := file.read(min(READ_CHUNK, left))):
                    left -= len(chunk)
                    yield chunk
            return
        bucket, key = where
        try:
            body = self._s3().get_object(
                Bucket=bucket, Key=f"{key}.{fmt}", Range=f"bytes={start}-{start + length - 1}"
            )["Body"]
        except Exception as exc:
            raise ArchiveError(f"could not read the recording at {location}: {_describe(exc)}") from exc
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def delete(self, location: str, formats: tuple[str, ...]) -> None:
        """Remove every format's file; one already gone counts as removed. Raises ArchiveError."""
        scheme, where = _parse(location)
        try:
            if scheme == "file":
                for fmt in formats:
                    where.with_name(f"{where.name}.{fmt}").unlink(missing_ok=True)
                return
            bucket, key = where
            result = self._s3().delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": f"{key}.{fmt}"} for fmt in formats], "Quiet": True}
            )
            if result.get("Errors"):
                first = result["Errors"][0]
                raise ArchiveError(f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}")
        except Exception as exc:
            raise ArchiveError(f"could not delete the recording at {location}: {_describe(exc)}") from exc

    def _s3(self) -> Any:
        # Created on first use, in a worker thread: making a boto3 client takes tens of milliseconds.
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                )
                self._client = boto3.client("s3", endpoint_url=self.s3_endpoint_url or None, config=config)
            return self._client


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"). Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def _parse(location: str) -> tuple[str, Any]:
    parts = urlsplit(location)
    if parts.scheme == "file":
        return "file", Path(unquote(parts.path))
    if parts.scheme == "s3":
        bucket, key = parse_s3_url(location)
        return "s3", (bucket, key)
    raise ArchiveError(f"unknown recording location {location!r}")


def _s3_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
