"""`colortrain app`: a Gradio page that recolours a picture from two captions side by side.

A picture (uploaded, or one of a few generated examples), a caption, a second caption and the
annealed-mean temperature; the page shows both colorizations at the picture's full resolution,
their attention maps, and the words read as unknown. It binds to 127.0.0.1 unless told
otherwise, loads no fonts or scripts from outside, and sends no analytics.

An upload reaches the model only through colorfeat.pictures (its formats and limits, the size
read from the header before anything is decoded: Gradio hands over the file, never decodes it).
Requests wait in a queue of at most QUEUE_SIZE and run one at a time. Uploads, results and the
examples live in one temporary folder of the server's own, emptied of files older than
CACHE_SECONDS while it runs and deleted when it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from colorfeat.constants import ANNEALED_T
from colorfeat.errors import UserError
from colorfeat.pictures import MAX_PICTURE_BYTES, load_picture
from colortrain.colorize import Colorist

# Before gradio is imported: no analytics, no version check, no hub look-ups.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_CAPTION_CHARS = 300
QUEUE_SIZE = 8  # requests waiting at most; more are refused at once
CACHE_SECONDS = 600  # uploads and results older than this are deleted while the page runs
TEMPERATURE_RANGE = (0.05, 1.0)
EXAMPLE_COUNT = 3
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts: nothing fetched from outside


def _gradio() -> Any:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    return gr


def check_picture(image: str | Path | None) -> np.ndarray:
    """The uploaded picture file as uint8 RGB (H, W, 3), or a UserError saying what is wrong."""
    if image is None or not str(image):
        raise UserError("upload a picture or pick an example first")
    return load_picture(image)


def check_caption(caption: str | None, which: str) -> str:
    """A non-empty caption of at most MAX_CAPTION_CHARS characters."""
    caption = (caption or "").strip()
    if not caption:
        raise UserError(f"the {which} caption is empty; describe the colours in words")
    if len(caption) > MAX_CAPTION_CHARS:
        raise UserError(f"the {which} caption has {len(caption)} characters; at most "
                        f"{MAX_CAPTION_CHARS}, please")  # fmt: skip
    return caption


def attention_overlay(heat: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """The attention map (h, w), upsampled and coloured, over the picture (H, W, 3) uint8."""
    from matplotlib import colormaps

    up = F.interpolate(torch.from_numpy(heat)[None, None].float(), size=picture.shape[:2],
                       mode="bilinear", align_corners=False)[0, 0].numpy()  # fmt: skip
    up = (up - up.min()) / max(float(up.max() - up.min()), 1e-12)  # (H, W) in [0, 1]
    colours = colormaps["jet"](up)[..., :3] * 255.0  # (H, W, 3)
    return (0.5 * colours + 0.5 * picture).astype(np.uint8)


class Demo:
    """The page's one action: colorize a picture from one or two captions."""

    def __init__(self, colorist: Colorist) -> None:
        self.colorist = colorist

    def run(
        self, image: str | Path | None, caption_a: str, caption_b: str, temperature: float
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None, str]:
        """(colorized A, colorized B, attention A, attention B, unknown words as Markdown)."""
        picture = check_picture(image)
        if not TEMPERATURE_RANGE[0] <= float(temperature) <= TEMPERATURE_RANGE[1]:
            raise UserError(f"the temperature must be in {TEMPERATURE_RANGE}")
        captions = [check_caption(caption_a, "first")]
        if (caption_b or "").strip():
            captions.append(check_caption(caption_b, "second"))
        results, heats, unknown = [], [], []
        for caption in captions:
            tokens, oov = self.colorist.encode(caption)
            result, heat = self.colorist.colorize(picture, tokens, float(temperature))
            results.append(result)
            heats.append(attention_overlay(heat, result))
            unknown.append(", ".join(sorted(set(oov))) or "none")
        results += [None] * (2 - len(results))
        heats += [None] * (2 - len(heats))
        note = "\n".join(f"- words read as unknown in caption {'AB'[i]}: {w}"
                         for i, w in enumerate(unknown))  # fmt: skip
        return results[0], results[1], heats[0], heats[1], note


def example_pictures(directory: Path, count: int = EXAMPLE_COUNT, seed: int = 0) -> list[list]:
    """A few generated gray pictures of coloured shapes (the synthetic source), saved as PNG,
    each with a caption naming its colours and the same caption with one colour changed."""
    from PIL import Image

    from colorfeat.sources.synthetic import PALETTE, draw_image, make_captions
    from colortrain.report import swap_caption

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        rgb, record = draw_image(rng, i, f"example-{i}.png")
        path = directory / f"example-{i}.png"
        Image.fromarray(rgb).convert("L").save(path)
        caption = make_captions(rng, record, 1)[0]
        rows.append([str(path), caption, swap_caption(caption, list(PALETTE)) or caption])
    return rows


def build_page(colorist: Colorist, examples_dir: Path) -> Any:
    """The Gradio Blocks page."""
    gr = _gradio()
    demo = Demo(colorist)

    def on_click(image, caption_a, caption_b, temperature):
        try:
            return demo.run(image, caption_a, caption_b, temperature)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    with gr.Blocks(title="Colour from language", delete_cache=(60, CACHE_SECONDS)) as page:
        gr.Markdown("# Colour a picture from a sentence\nThe picture's own lightness is kept; "
                    "the colours come from the caption. Change one colour word in the second "
                    "caption to see what it does.")  # fmt: skip
        with gr.Row():
            # A file path: Gradio neither decodes the upload nor converts it (image_mode None).
            image = gr.Image(label="picture", type="filepath", image_mode=None, elem_id="picture",
                             sources=["upload"], format="png")  # fmt: skip
            with gr.Column():
                caption_a = gr.Textbox(label="caption A", elem_id="caption-a",
                                       max_length=MAX_CAPTION_CHARS)  # fmt: skip
                caption_b = gr.Textbox(label="caption B (optional)", elem_id="caption-b",
                                       max_length=MAX_CAPTION_CHARS)  # fmt: skip
                temperature = gr.Slider(*TEMPERATURE_RANGE, value=ANNEALED_T, step=0.01,
                                        label="temperature (annealed mean)")  # fmt: skip
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
        with gr.Row():
            out_a = gr.Image(label="from caption A", format="png", elem_id="result-a")
            out_b = gr.Image(label="from caption B", format="png", elem_id="result-b")
        with gr.Row():
            heat_a = gr.Image(label="attention, caption A", format="png", elem_id="attention-a")
            heat_b = gr.Image(label="attention, caption B", format="png", elem_id="attention-b")
        unknown = gr.Markdown(elem_id="unknown")
        gr.Examples(example_pictures(examples_dir), inputs=[image, caption_a, caption_b])
        button.click(on_click, [image, caption_a, caption_b, temperature],
                     [out_a, out_b, heat_a, heat_b, unknown])  # fmt: skip
    return page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch(
    checkpoint: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    device: str = "cpu",
    workdir: Path,
) -> Any:
    """Load the checkpoint, build the page and start serving it (in the background) from
    `workdir`, which holds every file the page writes; returns the page."""
    colorist = Colorist.from_checkpoint(checkpoint, device)
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "cache")  # before gradio is imported
    gr = _gradio()
    examples_dir = workdir / "examples"
    examples_dir.mkdir()
    page = build_page(colorist, examples_dir)
    theme = gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])
    try:
        page.launch(
            server_name=host, server_port=port, share=False, inbrowser=False, theme=theme,
            max_file_size=MAX_PICTURE_BYTES, allowed_paths=[str(examples_dir)], footer_links=[],
            ssr_mode=False, mcp_server=False, prevent_thread_lock=True, quiet=True,
        )  # fmt: skip
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise UserError(f"cannot serve on {host}:{port}: {exc}") from exc
    return page


CLOSE_S = 20.0  # the longest a stop waits for the server to close


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    checkpoint: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, device: str
) -> None:
    """`colortrain app`: serve until Ctrl-C; print the address when ready, one line at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="colortrain-app-"))
    page = None
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop cleans up as Ctrl-C does
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored
    try:
        page = launch(checkpoint, host, port, device=device, workdir=workdir)
        print(f"colortrain app: serving on {page.local_url} (Ctrl-C stops it)", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("colortrain app: stopped", file=sys.stderr, flush=True)
    finally:
        if page is not None:
            _close(page)
        shutil.rmtree(workdir, ignore_errors=True)


def _close(page: Any) -> None:
    """Stop the page's server, waiting at most CLOSE_S: on a busy machine Gradio's shutdown can
    hang, and a stop must still end the command (its threads are left to the process's exit)."""
    closing = threading.Thread(target=page.close, kwargs={"verbose": False}, daemon=True)
    closing.start()
    closing.join(CLOSE_S)
