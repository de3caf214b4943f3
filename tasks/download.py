"""Downloading data files: progress bar, checksum, atomic write, cache, mirrors, a clear error offline.

    >>> from tasks.download import fetch, extract
    >>> zip_path = fetch("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "data/snli/snli_1.0.zip",
    ...                  sha256="afb3...", mirrors=["http://mirror.example.org/base"])
    >>> extract(zip_path, "snli_1.0/snli_1.0_dev.jsonl", "data/snli/snli_1.0_dev.jsonl")

* ``fetch`` returns ``dest`` at once when it already exists (and, with ``sha256``, matches it). Otherwise it tries
  each mirror, then the canonical URL. The bytes go to ``dest.part`` and are renamed onto ``dest``
  (``tasks.files.move_into_place``: fsync, ``os.replace``) only after the checksum matched: ``dest`` is complete or
  absent. An interrupted download keeps
  ``dest.part`` and the next ``fetch`` resumes it (an HTTP ``Range`` request; a server that ignores it sends the
  whole file, which restarts it); a resumed file whose checksum does not match is downloaded again from scratch.
  One process downloads a file at a time (a lock file beside it): the jobs of a sweep that start together wait
  for the first one instead of downloading the same file twelve times.
* Every download has an overall deadline besides the read timeout (a server that sends a byte every few seconds
  never trips a 30 s read timeout): ``deadline`` seconds, by default ``DATA_DEADLINE_S`` from the environment or
  3600. Past it the transfer stops with a ``DataMissingError``; what arrived is kept in ``dest.part`` and the next
  ``fetch`` resumes it. The lock beside ``dest`` is released on any failure, so the rest of a sweep does not wait.
* ``DATA_OFFLINE=1`` in the environment: never download (compute nodes without internet); a missing file is a
  ``DataMissingError`` at once that says to stage the data first (``make data TASK=...``, tasks/stage.py).
* ``obtain`` finds a file by name in local folders (a mirror such as ``../shared/data``, any folder: used as they
  are), else downloads it from its public URL into the cache; ``content_sha256`` verifies the uncompressed content
  of what is downloaded, so a plain copy and a ``.gz`` copy of the same file both pass.
* A mirror is a base URL that replaces the canonical scheme and host, keeping the path:
  ``with_mirror("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "http://m.local/pub")`` is
  ``http://m.local/pub/projects/snli/snli_1.0.zip``. ``file:///nfs/mirror`` works too (offline clusters).
* No network (every source unreachable): ``DataMissingError``, whose message says which file to put where and where
  to get it. A checksum mismatch: ``ChecksumError`` (a subclass of ``DataMissingError``).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from .files import atomic_open, move_into_place

CHUNK = 1 << 20
OFFLINE_ENV = "DATA_OFFLINE"
DEADLINE_ENV = "DATA_DEADLINE_S"
DEFAULT_DEADLINE_S = 3600.0
log = logging.getLogger(__name__)


class DataError(Exception):
    """Any problem with a task's data: missing, empty, damaged, malformed or misaligned files. The one class the
    harness catches (tasks/train.py: one line, exit 2), whatever the task; the message names the file and the fix."""


class DataMissingError(DataError, RuntimeError):
    """A data file is neither on disk nor downloadable; the message says which file to put where."""


class EmptyDataError(DataMissingError):
    """A data file (or a split made from it) with no usable example; the message names the file and why."""


class ChecksumError(DataMissingError):
    """A downloaded (or cached) file does not have the expected sha256."""


class DataFormatError(DataError, ValueError):
    """A data file that is there but cannot be used as it is (a malformed line, source and target files that are
    not line-aligned); the message names the file and, where it can, the line."""


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def with_mirror(url: str, mirror: str) -> str:
    """``url`` with its scheme and host replaced by the base URL ``mirror`` (the path is kept)."""
    path = urllib.parse.urlsplit(url).path
    return mirror.rstrip("/") + "/" + path.lstrip("/")


def missing_message(dest: Path, url: str | None, reason: str = "", hint: str = "") -> str:
    lines = [f"data file missing: {dest}"]
    if reason:
        lines.append(f"  download failed: {reason}")
    if url:
        lines.append(f"  get it from {url} and put it at {dest}")
    else:
        lines.append(f"  put it at {dest}")
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no")


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    mirrors: tuple[str, ...] | list[str] | str | None = (),
    desc: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    hint: str = "",
    deadline: float | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (cached, verified, atomic, resumable) and return ``dest`` as a ``Path``.

    ``mirrors``: base URLs tried before the canonical host (see ``with_mirror``); a string is one mirror.
    ``hint``: one more line for the ``DataMissingError`` message (e.g. "or set task.data.root=DIR").
    ``deadline``: seconds for each source's whole transfer (None: ``DATA_DEADLINE_S``, else 3600).
    """
    dest = Path(dest)
    if dest.exists():
        return _verified(dest, sha256, url)
    if offline():
        raise DataMissingError(missing_message(dest, url, f"{OFFLINE_ENV}=1: no downloads on this machine", (
            "stage the data where there is network first (make data TASK=<task> [DATA_DIR=...]); " + hint).strip()))
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    sources = [with_mirror(url, m) for m in (mirrors or ()) if m] + [url]
    deadline = download_deadline() if deadline is None else float(deadline)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        if dest.exists():  # another process downloaded it while this one waited
            return _verified(dest, sha256, url)
        part = dest.with_name(dest.name + ".part")
        errors = []
        for source in sources:
            try:
                resumed = _download(source, part, desc or dest.name, timeout, progress, deadline)
                if resumed and sha256 is not None and sha256sum(part) != sha256.lower():
                    part.unlink()  # the kept part may be of another file: once more from scratch
                    _download(source, part, desc or dest.name, timeout, progress, deadline)
                if sha256 is not None and (got := sha256sum(part)) != sha256.lower():
                    part.unlink()
                    raise ChecksumError(
                        f"checksum mismatch for {source}: sha256 {got}, expected {sha256}; nothing was written "
                        f"to {dest}"
                    )
                move_into_place(part, dest)
                return dest
            except ChecksumError:
                raise
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
                errors.append(f"{source}: {error!r}")  # (HTTPError is a URLError; a cut transfer keeps its part)
    raise DataMissingError(missing_message(dest, url, "; ".join(errors), hint))


def download_deadline() -> float:
    """Seconds a download may take in all: ``DATA_DEADLINE_S`` from the environment, else 3600."""
    value = os.environ.get(DEADLINE_ENV, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_DEADLINE_S
    except ValueError:
        raise DataMissingError(f"{DEADLINE_ENV}={value!r}: must be a number of seconds") from None
    if not seconds > 0:
        raise DataMissingError(f"{DEADLINE_ENV}={value!r}: must be a number of seconds > 0")
    return seconds


def _verified(dest: Path, sha256: str | None, url: str) -> Path:
    if sha256 is not None and sha256sum(dest) != sha256.lower():
        raise ChecksumError(
            f"{dest} exists but its sha256 is not {sha256}: a corrupted or different file. Delete it to "
            f"download it again from {url}."
        )
    return dest


@contextlib.contextmanager
def _locked(dest: Path):
    """An exclusive lock on ``dest.lock`` (other processes wait); the lock file is removed afterwards."""
    lock_path = dest.with_name(dest.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file after we opened it: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _download(url: str, part: Path, desc: str, timeout: float, progress: bool,
              deadline: float = DEFAULT_DEADLINE_S) -> bool:
    """Append to ``part`` from where it stops (HTTP Range), or write it whole; True when it resumed. A short
    transfer, or one still going after ``deadline`` seconds, raises ``OSError`` and keeps ``part`` for the next
    try. Reads return what has arrived (``read1``): a trickle cannot hold one read for hours."""
    stop_at = time.monotonic() + deadline
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "structured-attention/0.1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: the range starts past the end: the part is not of this file
            raise
        part.unlink()
        return _download(url, part, desc, timeout, progress, deadline)
    with response:
        status = getattr(response, "status", None)
        resumed = bool(have) and status == 206 and str(response.headers.get("Content-Range", "")).startswith(
            f"bytes {have}-")
        if have and not resumed:
            have = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        written = 0
        with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, leave=False) as bar:
            read = getattr(response, "read1", response.read)
            for chunk in iter(lambda: read(CHUNK), b""):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() > stop_at:
                    raise OSError(f"no complete download after the deadline of {deadline:g} s ({have + written:,} "
                                  f"bytes so far, kept in {part}: the next try resumes it; {DEADLINE_ENV}=SECONDS "
                                  f"sets the deadline)")
        if length is not None and written != int(length):
            raise OSError(f"truncated download: {have + written} of {total} bytes (kept in {part}: the next try "
                          "resumes it)")
    return resumed


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, decompressed when it is a ``.gz`` file."""
    digest = hashlib.sha256()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def verify_once(path: str | os.PathLike, sha256: str, url: str | None = None, content: bool = True) -> Path:
    """``path`` checked against its recorded sha256 (of the uncompressed content, or of the file itself with
    ``content=False``) once: a match is recorded in a marker beside it (``.<name>.sha256-ok``: the hash, size and
    modification time), and later calls with the same file only compare that. A mismatch is a ``ChecksumError``."""
    path = Path(path)
    stat = path.stat()
    stamp = f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"
    marker = path.with_name(f".{path.name}.sha256-ok")
    with contextlib.suppress(OSError):
        if marker.read_text() == stamp:
            return path
    got = content_sha256(path) if content else sha256sum(path)
    if got != sha256.lower():
        raise ChecksumError(f"{path}: its {'content' if content else 'file'} has sha256 {got}, not the recorded "
                            f"{sha256}: a damaged, partial or different file. Delete it (or replace it) to use the "
                            f"public copy{f' ({url})' if url else ''}.")
    with contextlib.suppress(OSError):  # a read-only folder: verified again next time
        marker.write_text(stamp)
    return path


def obtain(name: str, url: str | None, cache_dir: str | os.PathLike, local_dirs=(), content_sha: str | None = None,
           progress: bool = True, hint: str = "") -> Path:
    """The file ``name`` (a relative path): from the first local folder that has it (as is, or with ``.gz``
    added or removed: used as it is, the folder is yours, unless the folder is the cache itself: see below), else
    from the cache, else downloaded from ``url`` into the cache. ``content_sha``: sha256 of the uncompressed
    content, checked for downloaded copies and for files found in the cache (the CPU presets' default mirror is
    the cache, ``data_dir``), once per file (``verify_once``)."""
    base = name[:-3] if name.endswith(".gz") else name
    candidates = [Path(d) / n for d in local_dirs if d for n in dict.fromkeys((name, base, base + ".gz"))]
    cache = Path(cache_dir) / (base + ".gz" if url and url.endswith(".gz") else base)  # named as its content is
    for path in candidates:
        if path.is_file():
            return verify_once(path, content_sha, url) if content_sha and inside(path, cache_dir) else path
    for path in [cache]:
        if path.is_file():
            return verify_once(path, content_sha, url) if content_sha else path
    if not url:
        where = ", ".join(str(d) for d in local_dirs if d) or "(no folder given)"
        raise DataMissingError(missing_message(Path(local_dirs[0] if local_dirs else cache_dir) / name, None,
                                               f"not in {where}", hint))
    log.info(f"{name}: not in {', '.join(str(d) for d in local_dirs if d) or 'a local folder'}; downloading {url}")
    path = fetch(url, cache, progress=progress, hint=hint)
    if content_sha and content_sha256(path) != content_sha:
        path.unlink()
        raise ChecksumError(f"{url}: its content is not the expected {name} (sha256 {content_sha}); removed")
    return path


def extract(archive: str | os.PathLike, member: str | None, dest: str | os.PathLike) -> Path:
    """Write one member of a .zip / .tar.gz / .tgz / .tar archive (or the content of a .gz file, ``member=None``)
    to ``dest`` atomically; return ``dest``. Cached: an existing ``dest`` is returned as is."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return dest
    name = archive.name.lower()
    with contextlib.ExitStack() as stack:
        if name.endswith(".zip"):
            zf = stack.enter_context(zipfile.ZipFile(archive))
            try:
                source = zf.open(member)
            except KeyError:
                raise DataMissingError(f"{archive} has no member {member!r}") from None
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            tf = stack.enter_context(tarfile.open(archive))
            try:
                source = tf.extractfile(member)
            except KeyError:
                source = None
            if source is None:
                raise DataMissingError(f"{archive} has no file member {member!r}")
        elif name.endswith(".gz"):
            source = gzip.open(archive, "rb")
        else:
            raise ValueError(f"extract: unknown archive type {archive}")
        with source, atomic_open(dest) as out:
            shutil.copyfileobj(source, out, CHUNK)
    return dest


def open_text(path: str | os.PathLike, member: str | None = None):
    """A text stream (utf-8) over a plain file, a .gz file, or ``member`` of a .zip file."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".zip"):
        import io

        zf = zipfile.ZipFile(path)
        if member is None:
            texts = [n for n in zf.namelist() if n.endswith(".txt")]
            if len(texts) != 1:
                raise DataMissingError(f"{path}: say which member to read (candidates: {texts})")
            member = texts[0]
        return io.TextIOWrapper(zf.open(member), encoding="utf-8", errors="strict")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")
