"""Fetching archives over HTTP: resumable, retried, verified, and extracted safely.

`download` streams into `<dest>.part`, resumes with an HTTP Range request after a dropped
connection, retries transient failures with exponential back-off, shows a progress bar on stderr,
and only renames the file to `dest` once its byte size and SHA-256 match; a file that does not
match is deleted. The retry budget counts attempts in a row that brought no new bytes, so a link
that drops every few minutes still finishes a 13 GB archive. `safe_extract` checks every member's
CRC, refuses absolute paths, `..` and links, and extracts aside before renaming into place.

Failures are classified once (`is_transient`): connection errors, timeouts, HTTP 408/429/5xx and
bodies cut short are transient and raised as `NetworkError`, which the rebuild flow retries;
401/403/404, a hash mismatch after a full download and a bad URL are permanent `UserError`s.
URLs are redacted (`colorfeat.redact`) in everything these functions print or raise.
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
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from tenacity import RetryCallState, Retrying, retry_if_exception

from colorfeat.constants import PACKAGE_DATA_DIR
from colorfeat.errors import UserError
from colorfeat.hashing import file_sha256
from colorfeat.redact import redact_text, redact_url

CHECKSUMS_FILE = PACKAGE_DATA_DIR / "coco_checksums.tsv"
TIMEOUT = httpx.Timeout(30.0, read=60.0)
ATTEMPTS = 6  # attempts in a row without new bytes before giving up
BACKOFF_S = (1.0, 30.0)  # first wait, longest wait: about 30 s of waiting before giving up
MAX_ARCHIVE_BYTES = 40 << 30  # a file of unknown size; the largest official archive is 19.3 GB
MAX_TEXT_BYTES = 1 << 20  # a checksum listing
# Transport errors that no retry can fix: the URL's scheme, or a request httpx cannot send.
_PERMANENT_TRANSPORT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class Checksum(NamedTuple):
    size: int | None
    sha256: str | None


class NetworkError(UserError):
    """A network failure that may pass on a later try (connection, timeout, 5xx, cut-off body)."""


def is_transient(exc: BaseException) -> bool:
    """Whether exc is a network failure worth retrying (not a problem the user must fix)."""
    if isinstance(exc, httpx.TransportError):
        return not isinstance(exc, _PERMANENT_TRANSPORT)
    return isinstance(exc, NetworkError)


def transient_status(code: int) -> bool:
    """HTTP statuses that say "try again later": timeouts, rate limits, server errors."""
    return code in (408, 429) or (code >= 500 and code != 501)


def check_url(url: str) -> None:
    """A UserError unless url is an http(s) URL httpx can request."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UserError(f"not a valid URL: {redact_url(url)} ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or (parsed.port or 0) > 65535:
        raise UserError(f"not a valid http(s) URL: {redact_url(url)}")


def http_error(url: str, exc: httpx.HTTPError, what: str = "cannot reach") -> UserError:
    """The one-line error for a failed request: NetworkError when it may pass, else UserError."""
    kind = NetworkError if is_transient(exc) else UserError
    return kind(redact_text(f"{what} {url}: {type(exc).__name__}: {exc}"))


def status_error(url: str, code: int, what: str = "cannot download") -> UserError:
    kind = NetworkError if transient_status(code) else UserError
    hint = " (check the credentials in the URL)" if code in (401, 403) else ""
    return kind(f"{what} {redact_url(url)}: HTTP {code}{hint}")


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


def probe(url: str) -> bool:
    """Whether a file exists at url (HEAD, or a one-byte GET where HEAD is not allowed).

    False for 404/410 and 403 (which S3 answers for a missing object); NetworkError for a failure
    that may pass; UserError for other answers, such as 401 (a login is needed).
    """
    check_url(url)
    try:
        code = httpx.head(url, timeout=TIMEOUT, follow_redirects=True).status_code
        if code in (401, 403, 405, 501):  # some servers (signed URLs) only answer GET
            one = {"Range": "bytes=0-0"}
            r = httpx.get(url, headers=one, timeout=TIMEOUT, follow_redirects=True)
            code = 200 if r.status_code in (200, 206) else r.status_code
    except httpx.HTTPError as exc:
        raise http_error(url, exc) from None
    if code in (200, 403, 404, 410):
        return code == 200
    raise status_error(url, code, "cannot reach")


def fetch_text(url: str, limit: int = MAX_TEXT_BYTES) -> str | None:
    """A small text file, or None if the server has none (4xx); NetworkError when it may pass."""
    check_url(url)
    try:
        with httpx.stream("GET", url, timeout=TIMEOUT, follow_redirects=True) as r:
            if transient_status(r.status_code):
                raise status_error(url, r.status_code, "cannot fetch")
            if r.status_code != 200:
                return None
            body = b""
            for block in r.iter_bytes():
                body += block
                if len(body) > limit:
                    raise UserError(f"{redact_url(url)} is larger than {limit} bytes")
    except httpx.HTTPError as exc:
        raise http_error(url, exc) from None
    return body.decode("utf-8", errors="replace")


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


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _restart(part: Path, why: str) -> NetworkError:
    """Drop what was received and ask for a fresh attempt from the first byte."""
    part.unlink(missing_ok=True)
    return NetworkError(f"{why}; starting over")


def _complete_at_416(r: httpx.Response, part: Path, size: int | None) -> bool:
    """Whether a 416 to `Range: bytes=<part size>-` means that the part is the whole file."""
    m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("content-range", "").strip())
    total = int(m.group(1)) if m else size
    return total is not None and total == _size(part)


def _fetch(
    client: httpx.Client, url: str, part: Path, size: int | None, bar: Progress, task: TaskID
) -> int:
    """One attempt: continue `part` from its current size. -> bytes received."""
    offset = _size(part)
    cap = MAX_ARCHIVE_BYTES if size is None else size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    received = 0
    with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and offset:
            if _complete_at_416(r, part, size):
                return 0  # nothing left to send; verification decides
            raise _restart(part, "the server refused to resume (HTTP 416)")
        if r.status_code not in (200, 206):
            raise status_error(url, r.status_code)
        if r.status_code == 206:
            m = re.match(r"bytes (\d+)-", r.headers.get("content-range", ""))
            if not m or int(m.group(1)) != offset:
                raise _restart(part, "the server sent the wrong range")
        else:
            offset = 0  # the server ignored the range: start over
        length = r.headers.get("content-length")
        if length is not None and length.isdigit():
            bar.update(task, total=offset + int(length), completed=offset)
        with open(part, "ab" if offset else "wb") as f:
            for block in r.iter_bytes():  # unbuffered: a drop loses nothing received
                if offset + received + len(block) > cap:
                    part.unlink()
                    raise UserError(f"{redact_url(url)} sent more than the expected {cap} bytes")
                f.write(block)
                received += len(block)
                bar.update(task, advance=len(block))
    if size is not None and offset + received < size:  # the body ended early
        raise NetworkError(f"the connection closed after {offset + received} of {size} bytes")
    return received


class _Stalls:
    """The retry budget: failed attempts in a row that did not grow the part file."""

    def __init__(self, part: Path, backoff: tuple[float, float]) -> None:
        self.part, self.backoff = part, backoff
        self.best = _size(part)
        self.count = 0

    def after(self, retry_state: RetryCallState) -> None:
        """Count a failed attempt; one that brought new bytes starts the count over."""
        now = _size(self.part)
        self.count = 0 if now > self.best else self.count + 1
        self.best = max(self.best, now)

    def wait(self, retry_state: RetryCallState) -> float:
        first, longest = self.backoff
        return min(longest, first * 2 ** max(self.count - 1, 0))


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
    check_url(url)
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
    if progress:
        total = f" ({size / 1e9:.2f} GB)" if size else ""
        Console(stderr=True).print(f"downloading {redact_url(url)}{total}", highlight=False)
    fetched = _fetch_with_retries(url, part, size, progress, attempts, backoff)
    try:
        digest = verify(part, size, sha256, dest.name)
    except UserError as exc:
        part.unlink()
        raise UserError(
            f"download of {redact_url(url)} failed verification and was deleted: {exc}"
        ) from None
    part.rename(dest)
    return {"path": str(dest), "sha256": digest, "bytes_fetched": fetched}


def _fetch_with_retries(
    url: str,
    part: Path,
    size: int | None,
    progress: bool,
    attempts: int,
    backoff: tuple[float, float],
) -> int:
    """Bring `part` to its full size; retry transient failures until `attempts` in a row stall."""
    stalls = _Stalls(part, backoff)
    retrying = Retrying(
        stop=lambda _: stalls.count >= attempts,
        wait=stalls.wait,
        after=stalls.after,
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    fetched = 0
    try:
        with (
            httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client,
            _progress(progress) as bar,
        ):
            task = bar.add_task(part.name.removesuffix(".part"), total=size)
            for attempt in retrying:
                with attempt:
                    if size is None or _size(part) < size:
                        fetched += _fetch(client, url, part, size, bar, task)
    except (NetworkError, httpx.HTTPError) as exc:
        if not is_transient(exc):
            raise http_error(url, exc, "cannot download") from None
        reason = exc if isinstance(exc, NetworkError) else f"{type(exc).__name__}: {exc}"
        tries = f"after {attempts} attempts without progress"
        raise NetworkError(
            f"cannot download {redact_url(url)} {tries}: {redact_text(str(reason))}"
        ) from None
    return fetched


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
