"""What a visitor gives the app, checked: an image file and expressions typed one per line.

Every refusal is an `AppInputError` whose message is shown on the page as it is, so it names the problem and
what to do about it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from modeling_unires.image_processing_unires import to_rgb_image

# Longer side of what the app works on: a 10,000 × 10,000 photo is downscaled to this (masks, overlay and downloads
# are at the downscaled size, and the page says so). The model sees a few hundred pixels anyway; the limit keeps
# the overlay, the masks and the browser's copy of the image at a few megabytes.
MAX_IMAGE_SIDE = 2048
# Beyond PIL's decompression-bomb limit (about 179 megapixels) an image is refused rather than decoded.
MAX_EXPRESSIONS = 16


class AppInputError(ValueError):
    """Bad input from the page; its message is shown to the visitor."""


@dataclass
class LoadedImage:
    """The image the app works on, with the content hash that tells an upload seen before."""

    image: Image.Image
    fingerprint: str
    original_size: tuple[int, int]  # (width, height) of the file, before any downscaling
    notice: Optional[str] = None  # shown on the page when the image was changed (downscaled)


def file_fingerprint(path) -> str:
    """SHA-256 of a file's bytes: the same upload gives the same fingerprint, whatever its temporary name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_image_file(path, max_side: int = MAX_IMAGE_SIDE) -> LoadedImage:
    """
    Open an uploaded file as an RGB image no larger than `max_side` on its longer side.

    Raises `AppInputError` when there is no file, when it is not an image PIL can read, or when it is beyond PIL's
    decompression-bomb limit.
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise AppInputError("No image: upload an image or pick one of the examples.")
    path = Path(path)
    name = path.name
    try:
        with warnings.catch_warnings():
            # Images between PIL's warning and error limits are downscaled below, so the warning says nothing new.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                original_size = opened.size
                if max(original_size) > max_side and opened.format == "JPEG":
                    # Decode a JPEG at a reduced scale directly instead of at full size.
                    opened.draft("RGB", (max_side, max_side))
                opened.load()
                image = to_rgb_image(opened)
    except Image.DecompressionBombError as error:
        raise AppInputError(f"{name} is too large to open safely ({error}). Upload a smaller image.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # PIL raises these for files that are not images, truncated images and unsupported variants.
        raise AppInputError(f"{name} is not an image that can be read ({type(error).__name__}: {error}).") from error
    notice = None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.LANCZOS, reducing_gap=3.0)
    if image.size != original_size:
        notice = (
            f"The image is {original_size[0]} × {original_size[1]}; the app works on it downscaled to "
            f"{image.width} × {image.height} (masks and downloads are at that size)."
        )
    return LoadedImage(image=image, fingerprint=file_fingerprint(path), original_size=original_size, notice=notice)


def parse_expressions(text: Optional[str], max_expressions: int = MAX_EXPRESSIONS) -> list[str]:
    """
    The expressions typed in the text box, one per line, stripped; blank lines between them are ignored.

    Raises `AppInputError` when there is none, when the box holds only spaces, or when there are more than
    `max_expressions`.
    """
    if text is None or text == "":
        raise AppInputError("No expression: type one or more expressions, one per line.")
    expressions = [line.strip() for line in text.splitlines() if line.strip()]
    if not expressions:
        raise AppInputError("The expressions are only spaces: type one or more expressions, one per line.")
    if len(expressions) > max_expressions:
        raise AppInputError(f"{len(expressions)} expressions: the app takes at most {max_expressions} at a time.")
    return expressions
