"""Fetching archives over HTTP: resumable, retried, verified, and extracted safely.

`download` streams into `<dest>.part`, resumes with an HTTP Range request after a dropped
connection, retries transient failures (network errors, 5xx, 429) with exponential back-off, shows
a progress bar on stderr, and only renames the file to `dest` once its byte size and SHA-256 match;
a file that does not match is deleted. `safe_extract` checks every member's CRC, refuses absolute
paths, `..` and links, and extracts aside before renaming into place.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from colorfeat.constants import PACKAGE_DATA_DIR
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256

CHECKSUMS_FILE = PACKAGE_DATA_DIR / "coco_checksums.tsv"
TIMEOUT = httpx.Timeout(30.0, read=60.0)
ATTEMPTS = 6
BACKOFF_S = (1.0, 30.0)  # first wait, longest wait: about 30 s of waiting before giving up


class Checksum(NamedTuple):
    size: int | None
    sha256: str | None


def official_checksums(path: Path = CHECKSUMS_FILE) -> dict[str, Checksum]:
    """{archive file name: Checksum} of the official COCO archives, from the shipped table."""
    table = {}
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            url, size, sha = line.split("\t")
            table[url.rsplit("/", 1)[1]] = Checksum(int(size), sha.lower())
    return table


def checksums_from_listing(text: str) -> dict[str, Checksum]:
    """{file name: Checksum(None, sha)} of a `sha256sum` listing (`<hex>  [*]<path>` lines)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([0-9a-fA-F]{64})\s+\*?(\S.*)$", line.strip())
        if m:
            out[m.group(2).rsplit("/", 1)[-1]] = Checksum(None, m.group(1).lower())
    return out


class _Transient(Exception):
    """A failure worth retrying."""


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Transient, httpx.TransportError))


def probe(url: str) -> bool:
    """Whether a file exists at url (HEAD, or a one-byte GET where HEAD is not allowed)."""
    try:
        code = httpx.head(url, timeout=TIMEOUT, follow_redirects=True).status_code
        if code in (403, 405, 501):
            one = {"Range": "bytes=0-0"}
            r = httpx.get(url, headers=one, timeout=TIMEOUT, follow_redirects=True)
            code = 200 if r.status_code in (200, 206) else r.status_code
    except httpx.HTTPError as exc:
        raise UserError(f"cannot reach {url}: {exc}") from None
    return code == 200


def fetch_text(url: str) -> str | None:
    """A small text file, or None if the server has none (4xx)."""
    try:
        r = httpx.get(url, timeout=TIMEOUT, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise UserError(f"cannot reach {url}: {exc}") from None
    return r.text if r.status_code == 200 else None


def verify(path: Path, size: int | None, sha256: str | None, name: str | None = None) -> str:
    """The file's SHA-256 if it matches the expected size and hash; else UserError."""
    name = name or path.name
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise UserError(f"{name}: expected {size} bytes, got {actual_size}")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256.lower():
        raise UserError(f"{name}: SHA-256 mismatch (expected {sha256}, got {digest})")
    return digest


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),  # no bars in logs
    )


def _fetch(client: httpx.Client, url: str, part: Path, bar: Progress, task) -> int:
    """One attempt: continue `part` from its current size. -> bytes received."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    received = 0
    with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and offset:  # nothing left to send: the file is complete
            return 0
        if r.status_code >= 500 or r.status_code == 429:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise UserError(f"cannot download {url}: HTTP {r.status_code}")
        if r.status_code == 206:
            m = re.match(r"bytes (\d+)-", r.headers.get("content-range", ""))
            if not m or int(m.group(1)) != offset:
                raise UserError(f"cannot resume {url}: the server sent the wrong range")
        else:
            offset = 0  # the server ignored the range: start over
        length = r.headers.get("content-length")
        if length is not None:
            bar.update(task, total=offset + int(length), completed=offset)
        with open(part, "ab" if offset else "wb") as f:
            for block in r.iter_bytes():  # unbuffered: a drop loses nothing received
                f.write(block)
                received += len(block)
                bar.update(task, advance=len(block))
    return received


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    attempts: int = ATTEMPTS,
    backoff: tuple[float, float] = BACKOFF_S,
) -> dict:
    """Fetch url to dest unless dest already verifies. -> {"path", "sha256", "bytes_fetched"}."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            return {"path": str(dest), "sha256": verify(dest, size, sha256), "bytes_fetched": 0}
        except UserError:
            dest.unlink()
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()
    fetched = 0
    if progress:
        total = f" ({size / 1e9:.2f} GB)" if size else ""
        Console(stderr=True).print(f"downloading {url}{total}", highlight=False)
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff[0], max=backoff[1]),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    )
    try:
        with (
            httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client,
            _progress(progress) as bar,
        ):
            task = bar.add_task(dest.name, total=size)
            for attempt in retrying:
                with attempt:
                    if size is None or not part.exists() or part.stat().st_size < size:
                        fetched += _fetch(client, url, part, bar, task)
    except (httpx.TransportError, _Transient) as exc:
        raise UserError(f"cannot download {url} after {attempts} attempts: {exc}") from None
    try:
        digest = verify(part, size, sha256, dest.name)
    except UserError as exc:
        part.unlink()
        raise UserError(f"download of {url} failed verification and was deleted: {exc}") from None
    part.rename(dest)
    return {"path": str(dest), "sha256": digest, "bytes_fetched": fetched}


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if "\\" in name or ".." in PurePosixPath(name).parts:
        return "path outside the archive"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def safe_extract(archive: Path, dest: Path, *, prefix: str | None = None) -> list[str]:
    """Check and extract a zip (only members starting with `prefix`, if given) into dest.

    Extracts into a hidden directory beside the result, then renames each top-level entry into
    dest, replacing what an interrupted earlier run left. -> the top-level names.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"not a readable zip archive: {archive} ({exc})") from None
    with zf:
        for info in zf.infolist():
            if why := _unsafe(info):
                raise UserError(f"refusing {archive}: member {info.filename!r} is an {why}")
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UserError(f"corrupt zip archive {archive}: {exc}") from None
        if bad is not None:
            raise UserError(f"corrupt zip archive {archive}: CRC error in {bad}")
        members = [i for i in zf.infolist() if prefix is None or i.filename.startswith(prefix)]
        aside = dest / f".extract-{archive.name}"
        if aside.exists():
            shutil.rmtree(aside)
        aside.mkdir(parents=True)
        zf.extractall(aside, members=members)
    tops = sorted(p.name for p in aside.iterdir())
    for name in tops:
        target = dest / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (aside / name).rename(target)
    aside.rmdir()
    return tops
