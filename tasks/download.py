"""Downloading data files: progress bar, checksum, atomic write, cache, mirrors, a clear error offline.

    >>> from tasks.download import fetch, extract
    >>> zip_path = fetch("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "data/snli/snli_1.0.zip",
    ...                  sha256="afb3...", mirrors=["http://mirror.example.org/base"])
    >>> extract(zip_path, "snli_1.0/snli_1.0_dev.jsonl", "data/snli/snli_1.0_dev.jsonl")

* ``fetch`` returns ``dest`` at once when it already exists (and, with ``sha256``, matches it). Otherwise it tries
  each mirror, then the canonical URL. The bytes go to ``dest.tmp-<pid>`` and are renamed onto ``dest`` with
  ``os.replace`` only after the checksum matched: a failed, interrupted or corrupted download leaves nothing at
  ``dest`` (and removes its temporary file).
* A mirror is a base URL that replaces the canonical scheme and host, keeping the path:
  ``with_mirror("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "http://m.local/pub")`` is
  ``http://m.local/pub/projects/snli/snli_1.0.zip``. ``file:///nfs/mirror`` works too (offline clusters).
* No network (every source unreachable): ``DataMissingError``, whose message says which file to put where and where
  to get it. A checksum mismatch: ``ChecksumError`` (a subclass of ``DataMissingError``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


class DataMissingError(RuntimeError):
    """A data file is neither on disk nor downloadable; the message says which file to put where."""


class ChecksumError(DataMissingError):
    """A downloaded (or cached) file does not have the expected sha256."""


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


def _tmp_path(dest: Path) -> Path:
    return dest.with_name(f"{dest.name}.tmp-{os.getpid()}")


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


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    mirrors: tuple[str, ...] | list[str] | str | None = (),
    desc: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    hint: str = "",
) -> Path:
    """Download ``url`` to ``dest`` (cached, verified, atomic) and return ``dest`` as a ``Path``.

    ``mirrors``: base URLs tried before the canonical host (see ``with_mirror``); a string is one mirror.
    ``hint``: one more line for the ``DataMissingError`` message (e.g. "or set task.data.root=DIR").
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is not None and sha256sum(dest) != sha256.lower():
            raise ChecksumError(
                f"{dest} exists but its sha256 is not {sha256}: a corrupted or different file. Delete it to "
                f"download it again from {url}."
            )
        return dest
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    sources = [with_mirror(url, m) for m in (mirrors or ()) if m] + [url]
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in sources:
        tmp = _tmp_path(dest)
        try:
            _download(source, tmp, desc or dest.name, timeout, progress)
            if sha256 is not None:
                got = sha256sum(tmp)
                if got != sha256.lower():
                    raise ChecksumError(
                        f"checksum mismatch for {source}: sha256 {got}, expected {sha256}; nothing was written "
                        f"to {dest}"
                    )
            os.replace(tmp, dest)
            return dest
        except ChecksumError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as error:  # HTTPError is a URLError
            errors.append(f"{source}: {error}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DataMissingError(missing_message(dest, url, "; ".join(errors), hint))


def _download(url: str, tmp: Path, desc: str, timeout: float, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "structured-attention/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        total = response.headers.get("Content-Length")
        with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=desc, disable=not progress, leave=False) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and out.tell() != int(total):
            raise OSError(f"truncated download: {out.tell()} of {total} bytes")


def extract(archive: str | os.PathLike, member: str | None, dest: str | os.PathLike) -> Path:
    """Write one member of a .zip / .tar.gz / .tgz / .tar archive (or the content of a .gz file, ``member=None``)
    to ``dest`` atomically; return ``dest``. Cached: an existing ``dest`` is returned as is."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dest)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                try:
                    source = zf.open(member)
                except KeyError:
                    raise DataMissingError(f"{archive} has no member {member!r}") from None
                with source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive) as tf:
                try:
                    source = tf.extractfile(member)
                except KeyError:
                    source = None
                if source is None:
                    raise DataMissingError(f"{archive} has no file member {member!r}")
                with source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
        elif name.endswith(".gz"):
            with gzip.open(archive, "rb") as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        else:
            raise ValueError(f"extract: unknown archive type {archive}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
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
