"""The Gradio page: upload or pick an image, type expressions, get an overlay, a legend, scores, timings and files.

`UniRESApp` holds the handlers as plain methods (unit-tested without a browser) and `build()` wires them to a
`gr.Blocks`. Gradio is imported only in `build()`, so the rest of the app works without the `[app]` extra.

Events: a new file encodes the image (once per upload, kept in the visitor's `SessionState`); "Segment" runs the
text side and the decoder for the expressions not asked before on that image; the threshold slider remakes the
masks from the cached logits without running the model.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from PIL import Image

from .examples import write_example_images
from .inputs import AppInputError, file_fingerprint, load_image_file, parse_expressions
from .render import legend_html, overlay_masks, timings_markdown, write_mask_downloads
from .session import Segmenter, SessionState
from .timing import StepTimes

logger = logging.getLogger(__name__)

TITLE = "UniRES: segment what you type"


@dataclass
class PageOutput:
    """Everything one request shows on the page (None leaves a component empty)."""

    state: SessionState
    message: str = ""
    preview: Optional[Image.Image] = None
    overlay: Optional[Image.Image] = None
    legend: str = ""
    timings: str = ""
    downloads: list[str] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)  # the same times, as numbers

    def as_segment_outputs(self):
        return (self.state, self.message, self.overlay, self.legend, self.timings, self.downloads or None)

    def as_load_outputs(self):
        return (self.state, self.message, self.preview, self.timings)


def _error_text(error: Exception) -> str:
    if isinstance(error, AppInputError):
        return f"⚠️ {error}"
    # Unexpected: the server log gets the traceback, the page a one-line reason.
    logger.exception("UniRES app: request failed")
    return f"⚠️ Something went wrong: {type(error).__name__}: {error}"


class UniRESApp:
    """The app's behaviour around one shared `Segmenter`; `download_dir` receives each request's mask files."""

    def __init__(self, segmenter: Segmenter, model_name: str = "", download_dir=None, num_examples: int = 4):
        self.segmenter = segmenter
        self.model_name = model_name
        self._temporary = None
        if download_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="unires-app-")
            download_dir = self._temporary.name
        self.download_dir = Path(download_dir)
        self.num_examples = num_examples

    # ------------------------------------------------------------------ handlers

    def load_image(self, file_path, state: Optional[SessionState]) -> PageOutput:
        """A new file: read it and encode it (the image side runs here, once per upload)."""
        state = state if state is not None else SessionState()
        if not file_path:
            state.clear()
            return PageOutput(state=state)
        times = StepTimes()
        try:
            with times.step("read image"):
                loaded = load_image_file(file_path)
            with times.step("encode image"):
                encoded_now = state.set_image(self.segmenter, loaded.image, loaded.fingerprint, loaded.notice)
            if not encoded_now:
                times.steps[-1] = ("encode image (already encoded)", times.steps[-1][1])
        except Exception as error:  # noqa: BLE001  (every failure becomes a message on the page)
            state.clear()
            return PageOutput(state=state, message=_error_text(error))
        return PageOutput(
            state=state, message=state.notice, preview=loaded.image, timings=timings_markdown(times.steps),
            steps=times.steps,
        )

    def segment(self, file_path, text, threshold, state: Optional[SessionState]) -> PageOutput:
        """Masks for the typed expressions; the image is encoded only when it is not the one in `state`."""
        state = state if state is not None else SessionState()
        times = StepTimes()
        try:
            if not file_path:
                raise AppInputError("No image: upload an image or pick one of the examples.")
            expressions = parse_expressions(text)
            with times.step("check image"):
                fingerprint = file_fingerprint(file_path)
                cached = state.has_image(fingerprint)
            if cached:
                times.add(f"encode image (cached: took {state.encode_seconds * 1000:.1f} ms at upload)", 0.0)
            else:
                with times.step("read image"):
                    loaded = load_image_file(file_path)
                with times.step("encode image"):
                    state.set_image(self.segmenter, loaded.image, loaded.fingerprint, loaded.notice)
            with times.step("text + decoder"):
                decoded = state.ask(self.segmenter, expressions)
            name, seconds = times.steps[-1]
            times.steps[-1] = (f"{name} ({decoded} of {len(expressions)} expressions new)", seconds)
            return self._render(state, threshold, times)
        except Exception as error:  # noqa: BLE001
            return PageOutput(state=state, message=_error_text(error))

    def rethreshold(self, threshold, state: Optional[SessionState]) -> PageOutput:
        """Remake the masks at a new threshold from the cached logits: no model runs."""
        state = state if state is not None else SessionState()
        if state.encoded is None or not state.expressions:
            return PageOutput(state=state, message="Segment first: the threshold applies to the masks shown.")
        try:
            return self._render(state, threshold, StepTimes())
        except Exception as error:  # noqa: BLE001
            return PageOutput(state=state, message=_error_text(error))

    def _render(self, state: SessionState, threshold, times: StepTimes) -> PageOutput:
        threshold = self.segmenter.default_threshold if threshold is None else float(threshold)
        expressions = state.expressions
        with times.step(f"masks at threshold {threshold:.2f}"):
            masks, scores = self.segmenter.masks(
                state.current_logits(), state.encoded.size, threshold, texts=expressions
            )
        with times.step("overlay + legend"):
            overlay = overlay_masks(state.encoded.image, masks)
            legend = legend_html(expressions, scores, masks)
        with times.step("downloads (PNGs + RLE JSON)"):
            folder = self.download_dir / uuid.uuid4().hex
            downloads = [str(path) for path in write_mask_downloads(folder, expressions, masks, scores, threshold)]
        # The image's notice (e.g. "downscaled to 2048 × ...") goes with every set of masks made on it.
        return PageOutput(
            state=state, message=state.notice, overlay=overlay, legend=legend, timings=timings_markdown(times.steps),
            downloads=downloads, steps=list(times.steps),
        )

    # ------------------------------------------------------------------ page

    def build(self):
        """The `gr.Blocks` page (needs the `[app]` extra: `pip install 'unires[app]'`)."""
        import gradio as gr

        examples = write_example_images(self.download_dir / "examples", self.num_examples)
        threshold = self.segmenter.default_threshold
        with gr.Blocks(title=TITLE, analytics_enabled=False) as blocks:
            gr.Markdown(
                f"# {TITLE}\n"
                "Upload an image (or pick an MRES-Synth example below) and type what to segment, one expression "
                "per line: an object (*the red car on the left*) or a part of one (*the wheels of the blue bus*). "
                "The image is encoded once; new expressions run only the text side and the decoder, and the "
                "threshold slider remakes the masks without running the model."
                + (f"\n\nModel: `{self.model_name}`" if self.model_name else "")
            )
            state = gr.State(SessionState())
            with gr.Row():
                with gr.Column():
                    image_file = gr.File(label="Image", type="filepath", elem_id="image-file")
                    preview = gr.Image(label="Your image", type="pil", interactive=False, elem_id="preview")
                    expressions = gr.Textbox(
                        label="Expressions, one per line", lines=4, elem_id="expressions",
                        placeholder="the red car\nthe wheels of the blue bus",
                    )
                    slider = gr.Slider(0.0, 1.0, value=threshold, step=0.01, label="Mask threshold",
                                       elem_id="threshold")
                    button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                    gr.Examples(examples=[list(example) for example in examples], inputs=[image_file, expressions],
                                label="MRES-Synth examples")
                with gr.Column():
                    message = gr.Markdown(elem_id="message")
                    overlay = gr.Image(label="Masks", type="pil", format="png", interactive=False, elem_id="overlay")
                    legend = gr.HTML(elem_id="legend")
                    timings = gr.Markdown(elem_id="timings")
                    downloads = gr.File(label="Masks: a PNG per expression and masks.json (COCO RLE)",
                                        file_count="multiple", interactive=False, elem_id="downloads")
            # One queue for every model call: a CPU serves one request at a time best.
            shared = dict(concurrency_id="unires", concurrency_limit=1)
            image_file.change(
                lambda path, current: self.load_image(path, current).as_load_outputs(),
                inputs=[image_file, state], outputs=[state, message, preview, timings], **shared,
            )
            segment_outputs = [state, message, overlay, legend, timings, downloads]
            # Only the button submits: Enter in the multi-line box starts the next expression.
            button.click(
                lambda path, text, value, current: self.segment(path, text, value, current).as_segment_outputs(),
                inputs=[image_file, expressions, slider, state], outputs=segment_outputs, **shared,
            )
            slider.release(
                lambda value, current: self.rethreshold(value, current).as_segment_outputs(),
                inputs=[slider, state], outputs=segment_outputs, **shared,
            )
        return blocks

    def launch(self, host: str = "127.0.0.1", port: Optional[int] = None, **kwargs):
        """Build and serve the page (blocking unless `prevent_thread_lock=True`)."""
        blocks = self.build()
        blocks.queue()
        return blocks.launch(
            server_name=host, server_port=port, ssr_mode=False, show_error=True,
            allowed_paths=[str(self.download_dir)], **kwargs,
        )
