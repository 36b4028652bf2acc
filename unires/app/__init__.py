"""The UniRES Gradio app (`examples/app.py`, `make app`): segment what you type in a browser.

`Segmenter` and `SessionState` (session.py) encode an image once and keep the logits of each expression;
`render.py` draws the overlay, the legend and the mask files; `interface.py` is the page. Gradio is needed only for
the page itself (the `[app]` extra).
"""

from .inputs import MAX_IMAGE_SIDE, AppInputError, load_image_file, parse_expressions
from .interface import UniRESApp
from .render import legend_html, overlay_masks, write_mask_downloads
from .session import EncodedImage, Segmenter, SessionState

__all__ = [
    "MAX_IMAGE_SIDE",
    "AppInputError",
    "EncodedImage",
    "Segmenter",
    "SessionState",
    "UniRESApp",
    "legend_html",
    "load_image_file",
    "overlay_masks",
    "parse_expressions",
    "write_mask_downloads",
]
