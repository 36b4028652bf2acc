"""Opening the images the pipeline is given as local paths, http(s) URLs or `data:` URIs.

The image processor takes decoded images (PIL, numpy, torch), as transformers' image processors do; the pipeline
opens the rest here first, as transformers' pipelines do with `load_image`. This file travels beside saved
checkpoints with the pipeline (remote code): it imports only the standard library and PIL.
"""

import base64
import binascii
import io
import os
import urllib.request

from PIL import Image


def open_image(source, index: int = 0) -> Image.Image:
    """
    Open an image given as a local path, an http(s) URL or a `data:` URI (base64), undecoded beyond PIL's own
    reading: the colour handling of the image processor's `to_rgb_image` then applies to it exactly as to an image opened by the caller.

    `ValueError` names the image (index and path or URL): "No image file at X" for a string that is none of the
    three (a mistyped path reads as one, not as a bad URL or base64 string), and a clear reason when it cannot be
    read or downloaded.
    """
    source = os.fspath(source)
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                data = response.read()
        except (OSError, ValueError) as error:  # URLError, timeouts and HTTP errors are OSErrors
            raise ValueError(f"image {index}: cannot download {source!r}: {error}") from error
        stream, name = io.BytesIO(data), source
    elif source.startswith("data:"):
        header, _, payload = source.partition(",")
        name = f"{header},..."
        if not header.endswith(";base64"):
            raise ValueError(
                f"image {index}: the data URI {name!r} is not base64-encoded (expected data:image/...;base64,...)"
            )
        try:
            stream = io.BytesIO(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"image {index}: the data URI {name!r} holds invalid base64: {error}") from error
    else:
        if not os.path.isfile(source):
            raise ValueError(f"image {index}: No image file at {source!r} (nor is it an http(s) URL or a data: URI)")
        stream, name = source, source
    try:
        image = Image.open(stream)
        image.load()
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {index}: {name!r} is not a readable image: {error}") from error
    return image


def open_if_location(image, index: int = 0):
    """`image` opened by [`open_image`] when it is a path, URL or data URI (a `str` or `os.PathLike`), else as is."""
    return open_image(image, index) if isinstance(image, (str, os.PathLike)) else image


__all__ = ["open_if_location", "open_image"]
