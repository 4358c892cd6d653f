"""Fixtures for ingestion tests: a fault-injecting HTTP server and an S3 server on loopback, tiny
COCO trees."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@dataclass
class FileServer:
    """Serves `files` (URL path -> bytes) with Range support and injected faults."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    fail_first: set[str] = field(default_factory=set)  # answer 500 to the first GET
    drop_once: set[str] = field(default_factory=set)  # close the connection half-way, once
    sent: dict[str, int] = field(default_factory=dict)  # body bytes sent per path
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    # More faults, and a login; see test_download.py for what each one stands for.
    unavailable: dict[str, int] = field(default_factory=dict)  # next n requests: `busy_status`
    busy_status: int = 503
    drop_after: dict[str, int] = field(default_factory=dict)  # close after k body bytes, each GET
    ignore_range: set[str] = field(default_factory=set)  # answer 200 with the whole file
    short_once: dict[str, int] = field(default_factory=dict)  # next GET: a clean n-byte body
    login: str | None = None  # "user:password" that every request must send as Basic auth


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a connection left open cannot hold the fixture's teardown longer

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self.path
            rng = self.headers.get("Range")
            server.requests.append((self.command, path, rng))
            if not self._authorized():
                self._reply(401, b"login required", body)
                return
            if server.unavailable.get(path, 0) > 0:
                server.unavailable[path] -= 1
                self._reply(server.busy_status, b"busy", body)
                return
            data = server.files.get(path)
            if data is None:
                self._reply(404, b"not found", body)
                return
            if body and path in server.fail_first:
                server.fail_first.discard(path)
                self._reply(500, b"try again", body)
                return
            start = 0
            if rng and path not in server.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            chunk = data[start:]
            if body and path in server.short_once:
                chunk = chunk[: server.short_once.pop(path)]
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                return
            if path in server.drop_once or path in server.drop_after:
                server.drop_once.discard(path)
                half = chunk[: server.drop_after.get(path, len(chunk) // 2)]
                # counted before writing: the client may read the last byte and the test check
                # the count before this thread runs again
                server.sent[path] = server.sent.get(path, 0) + len(half)
                self.wfile.write(half)
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            server.sent[path] = server.sent.get(path, 0) + len(chunk)
            self.wfile.write(chunk)

        def _authorized(self) -> bool:
            if server.login is None:
                return True
            expected = "Basic " + base64.b64encode(server.login.encode()).decode()
            return self.headers.get("Authorization") == expected

        def _reply(self, code: int, text: bytes, body: bool) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if body:
                self.wfile.write(text)

    return Handler


class _LoopbackServer(ThreadingHTTPServer):
    """Request threads are joined when the server closes, so that none outlives its test (one
    that did wrote its error to a closed stderr: a teardown error on a busy machine). A client
    that hangs up is not an error here: the tests drop connections on purpose."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def file_server():
    """A FileServer on 127.0.0.1 (random port); fill `files` and fault sets in the test."""
    state = FileServer()
    httpd = _LoopbackServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="session")
def _s3_server():
    """One S3-compatible server (moto) on 127.0.0.1 for the session: fsspec keeps its file
    systems by their options, so one made for a server on another port would be handed out again."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(_s3_server):
    """The S3 server, emptied, with one bucket, `colorfeat-test`; its URL is in AWS_ENDPOINT_URL
    and test credentials in AWS_*, for the module's tests."""
    import httpx
    import s3fs

    httpx.post(f"{_s3_server}/moto-api/reset").raise_for_status()
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": _s3_server,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("colorfeat-test")
        yield _s3_server


def jpeg_bytes(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def colour_picture(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    """A small colourful (h, w, 3) uint8 picture."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))


def write_coco(root: Path, split: str, images: dict[str, bytes], captions: dict[str, list[str]]):
    """A COCO-layout split: root/<split>/<file>, root/annotations/captions_<split>.json.

    Image ids follow the order of `images` (1, 2, ...); `captions` maps file name -> texts, and
    may name files absent from `images` (written as image entries with no file).
    """
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([*images, *captions]))
    entries, anns = [], []
    for i, name in enumerate(names, start=1):
        if name in images:
            (root / split / name).write_bytes(images[name])
        entries.append({"id": i, "file_name": name, "width": 1, "height": 1})
        for text in captions.get(name, []):
            anns.append({"id": len(anns) + 1, "image_id": i, "caption": text})
    doc = {"images": entries, "annotations": anns}
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(doc))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def kit():
    """Builders for test data: jpeg_bytes, colour_picture, write_coco, zip_bytes."""

    class Kit:
        pass

    k = Kit()
    k.jpeg_bytes = jpeg_bytes
    k.colour_picture = colour_picture
    k.write_coco = write_coco
    k.zip_bytes = zip_bytes
    return k
