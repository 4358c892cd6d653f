"""`colortrain app`: the page's limits, and the page driven in headless Chromium end to end."""

from __future__ import annotations

import io
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab
from typer.testing import CliRunner

from colorfeat.errors import UserError
from colortrain.app import MAX_CAPTION_CHARS, Demo
from colortrain.colorize import Colorist
from flows.cli.colortrain import app

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _picture(h: int = 45, w: int = 70) -> np.ndarray:
    """A gray gradient with a coloured disc, not square, so that a squashed size would show."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.repeat((60 + 120 * xx / w)[..., None], 3, axis=2)
    rgb[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2] = (40, 90, 200)
    return rgb.astype(np.uint8)


def _mean_abs_dl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(rgb2lab(a)[..., 0] - rgb2lab(b)[..., 0]).mean())


def test_demo_colorizes_at_full_size_and_enforces_limits(tiny_checkpoint: Path, tmp_path: Path):
    demo = Demo(Colorist.from_checkpoint(tiny_checkpoint))
    picture = _picture()
    upload = tmp_path / "upload.png"
    Image.fromarray(picture).save(upload)
    a, b, heat_a, heat_b, note = demo.run(str(upload), "a red disc", "a blue blorp", 0.38)
    assert a.shape == b.shape == heat_a.shape == heat_b.shape == picture.shape
    assert _mean_abs_dl(a, picture) < 1.0
    assert "caption A: none" in note and "caption B: blorp" in note
    only_a = demo.run(str(upload), "a red disc", "  ", 0.38)
    assert only_a[1] is None and only_a[3] is None
    tga = tmp_path / "upload.tga"  # a format Pillow reads but the picture reader does not
    Image.fromarray(picture).save(tga)
    for args, message in (
        ((None, "a red disc", "", 0.38), "upload a picture"),
        ((str(tga), "a red disc", "", 0.38), "not an image of a format read here"),
        ((str(upload), "   ", "", 0.38), "first caption is empty"),
        ((str(upload), "red " * MAX_CAPTION_CHARS, "", 0.38), f"at most {MAX_CAPTION_CHARS}"),
        ((str(upload), "a red disc", "", 5.0), "temperature must be in"),
    ):
        with pytest.raises(UserError, match=message):
            demo.run(*args)


def test_demo_checks_the_header_before_decoding(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    """A small file claiming a huge picture is refused from its header: nothing is decoded."""
    from PIL import ImageFile

    bomb = tmp_path / "bomb.png"  # 13000 x 13000 claimed by a 70-byte file
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 13_000, 13_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    bomb.write_bytes(bytes(data))
    demo = Demo(Colorist.from_checkpoint(tiny_checkpoint))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(UserError, match="too large"):
        demo.run(str(bomb), "a red disc", "", 0.38)


def test_app_command_reports_a_bad_checkpoint(tmp_path: Path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["app", "--checkpoint", str(bad), "--port", "1"])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"colortrain: error: {bad} is not a readable colortrain")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser() -> str:
    found = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    if found is None:
        pytest.fail(
            "no Chromium found: install it with `apt-get install -y chromium` (.ci/run does)"
        )
    return found


def _command(checkpoint: Path, port: int) -> list[str]:
    """`colortrain app ...` as this checkout's code runs it (whatever the installed script)."""
    program = "from flows.cli.colortrain import app; app(prog_name='colortrain')"
    return [sys.executable, "-c", program, "app", "--checkpoint", str(checkpoint),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def _serve(checkpoint: Path, port: int, tmp: Path) -> subprocess.Popen:
    """`colortrain app` as a user starts it, on loopback, its temporary files under `tmp`;
    returns once it answers HTTP."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(_command(checkpoint, port), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):  # bounded: at most 600 refused connections, each answered at once
        if proc.poll() is not None:
            pytest.fail(f"colortrain app exited with {proc.returncode}: {proc.communicate()[0]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            try:
                proc.wait(timeout=0.1)  # the server is still importing: give it the core
            except subprocess.TimeoutExpired:
                pass
    proc.kill()
    pytest.fail(f"colortrain app did not answer on its port: {proc.communicate()[0]}")


def test_app_in_headless_chromium(tiny_checkpoint: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    browser_path = _browser()
    picture = _picture()
    upload = tmp_path / "input.png"
    Image.fromarray(picture).save(upload)
    port = _free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = _serve(tiny_checkpoint, port, tmp)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True)
            tab = browser.new_page(viewport={"width": 1280, "height": 1000})
            tab.goto(f"http://127.0.0.1:{port}/")
            tab.locator("#picture input[type=file]").set_input_files(str(upload))
            tab.wait_for_selector("#picture img", timeout=15_000)
            tab.locator("#caption-a textarea").fill("a red disc")
            tab.locator("#caption-b textarea").fill("a blue disc")
            tab.locator("#colorize").click()
            tab.wait_for_selector("#result-b img", timeout=15_000)
            src = tab.locator("#result-a img").get_attribute("src")
            unknown = tab.locator("#unknown").inner_text()
            shot = tmp_path / "app.png"
            tab.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            browser.close()
        body = httpx.get(src, timeout=10).content
        assert list(tmp.rglob("*.png"))  # the upload and the results, while it runs
    finally:
        server.terminate()
        server.communicate(timeout=30)  # closes its pipe
    assert server.returncode == 0
    assert list(tmp.iterdir()) == []  # uploads, results and examples deleted when it stops
    result = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert result.shape == picture.shape
    assert _mean_abs_dl(result, picture) < 1.0
    assert "caption A: none" in unknown
    assert shot.stat().st_size > 10_000


def test_app_prints_its_address_when_ready_and_one_line_on_ctrl_c(
    tiny_checkpoint: Path, tmp_path: Path
):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(_command(tiny_checkpoint, port), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=180)  # the import and the page take long on a busy machine
        url = f"http://127.0.0.1:{port}/"
        assert first.strip() == f"colortrain app: serving on {url} (Ctrl-C stops it)"
        assert httpx.get(url, timeout=10).status_code == 200  # ready when it says so
        assert [p.name[:15] for p in tmp_path.iterdir()] == ["colortrain-app-"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)  # a busy machine is slow to shut down
        except subprocess.TimeoutExpired:
            proc.kill()  # nothing of it outlives the test
            proc.communicate()
            raise
    assert proc.returncode == 0
    assert out == "" and err.strip().splitlines() == ["colortrain app: stopped"]
    assert list(tmp_path.iterdir()) == []
