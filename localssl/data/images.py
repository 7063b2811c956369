"""Image files read safely and faithfully: the decoder their suffix names, every mode to 8-bit RGB.

Pillow picks a decoder by a file's *content*: a ``.png`` that holds PostScript is handed to the EPS
plugin and from there to Ghostscript, where it is installed. Here a file is opened only with the
decoder its suffix names (:data:`SUFFIX_FORMATS`); a file whose content is another format is refused
with its name, what its content looks like, and the fix.

Conversion to 8-bit RGB (:func:`to_rgb8`), chosen so that no mode is silently destroyed:

- ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``YCbCr``, ``CMYK``: Pillow's conversion (CMYK without a colour
  profile: ``R = 255 - min(255, C + K)``);
- 16-bit samples (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; and ``I`` from a PNG or PGM/PPM, how older
  Pillow opens 16-bit files): the high byte, ``v >> 8`` (the inverse of the 8- to 16-bit ``v * 257``;
  Pillow reads 16-bit RGB PNGs the same way);
- ``I`` from any other format (32-bit integers, e.g. TIFF): refused, the range of its values is not defined;
- ``F`` (32-bit float): values in [0, 1] are intensities (``round(255 v)``); any other value is refused;
- transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, ``P``/``L``/``RGB`` with a
  transparent colour): composited over black, so a fully transparent pixel is 0 whatever colour the file
  stores under it (a fully opaque image is unchanged);
- any other mode (``LAB``, ``HSV``, ...): refused.

Animated GIF/WebP and multi-page TIFF files give their first frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from localssl.data.base import DatasetError

SUFFIX_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".pbm": "PPM",
    ".pnm": "PPM",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
IMAGE_SUFFIXES = tuple(SUFFIX_FORMATS)

_MAGIC = (  # (prefix, what the content is), for the error message only: never used to pick a decoder
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
)

_DIRECT = {"1", "L", "P", "RGB", "RGBX", "YCbCr", "CMYK"}
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_UINT16 = {"I;16", "I;16B", "I;16L", "I;16N"}
_16BIT_AS_I = {"PNG", "PPM"}  # formats whose mode ``I`` holds 16-bit samples (0..65535)


def sniff(head: bytes) -> str | None:
    """What the first bytes of a file look like (for messages only), e.g. ``'PostScript/EPS'``; None if unknown."""
    for prefix, what in _MAGIC:
        if head.startswith(prefix):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "PPM"
    return None


def image_format(name: str) -> str:
    """The Pillow format that the suffix of ``name`` names; an unknown suffix is an error."""
    fmt = SUFFIX_FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise DatasetError(
            f"{name} is not an image (known suffixes: {' '.join(IMAGE_SUFFIXES)}); "
            "move it out of the data folder, or convert it to one of these formats"
        )
    return fmt


def open_image(source: Path | bytes, name: str | None = None) -> Image.Image:
    """Open ``source`` (a path, or the bytes of a file called ``name``) with the one decoder its suffix
    names. A file of another format is refused by name: it is never handed to another decoder."""
    name = str(source) if name is None else name
    fmt = image_format(name)
    blob = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        return Image.open(io.BytesIO(blob), formats=[fmt])
    except UnidentifiedImageError:
        what = sniff(blob[:16])
        if what == fmt:
            found = f"a damaged {fmt} file"
        else:
            found = f"not a {fmt} file: its content is {what or 'no image format known here'}"
        raise DatasetError(
            f"{name} is {found}. A file is decoded only as the format its suffix ({Path(name).suffix}) names. "
            f"Fix: replace it with a {fmt} file (convert it, or give it the suffix of its real format) or remove it"
        ) from None


def _refuse(name: str, what: str, fix: str) -> DatasetError:
    return DatasetError(f"{name}: {what}; {fix}")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")


def _int_to_rgb(img: Image.Image, name: str) -> Image.Image:
    """16-bit samples (``I;16*``, or ``I`` from PNG/PGM) -> their high byte; other ``I`` images refused."""
    arr = np.asarray(img)
    if img.mode == "I" and img.format not in _16BIT_AS_I:
        raise _refuse(
            name,
            f"32-bit integer samples ({img.format} mode I, values {arr.min()}..{arr.max()}) have no defined range",
            "save it as an 8-bit or 16-bit image",
        )
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise _refuse(name, f"16-bit samples out of range ({arr.min()}..{arr.max()})", "save it as an 8-bit image")
    return _gray_to_rgb(arr.astype(np.uint32) >> 8)


def _float_to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Float samples in [0, 1] -> ``round(255 v)``; anything else (NaN, negative, above 1) refused."""
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size < arr.size or (finite.size and (finite.min() < 0.0 or finite.max() > 1.0)):
        span = f"finite ones from {finite.min():g} to {finite.max():g}" if finite.size else "none finite"
        raise _refuse(
            name,
            f"32-bit float samples outside [0, 1] ({span}, {arr.size - finite.size} NaN or infinite)",
            "scale it to [0, 1] or save it as an 8-bit image",
        )
    return _gray_to_rgb(np.floor(arr * 255.0 + 0.5))


def _over_black(img: Image.Image) -> Image.Image:
    """Composite an image with transparency over opaque black."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")


def to_rgb8(img: Image.Image, name: str) -> Image.Image:
    """``img`` as 8-bit RGB following the module's rules; a mode that cannot be converted faithfully is
    refused with ``name``."""
    mode = img.mode
    if mode in _ALPHA or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _over_black(img)
    if mode in _DIRECT:
        return img.convert("RGB")
    if mode in _UINT16 or mode == "I":
        return _int_to_rgb(img, name)
    if mode == "F":
        return _float_to_rgb(img, name)
    raise _refuse(name, f"image mode {mode} is not supported", "convert it to 8-bit RGB (or grayscale)")


def read_image(source: Path | bytes, name: str | None = None, size: int | None = None, channels: int = 3) -> np.ndarray:
    """One image file as uint8 ``(channels, H, W)`` (3: RGB, 1: grayscale luma), resized (bilinear) to
    ``size`` × ``size`` when given. Errors name the file."""
    name = str(source) if name is None else name
    with open_image(source, name) as img:
        try:
            out = to_rgb8(img, name)
        except DatasetError:
            raise
        except (OSError, ValueError, SyntaxError) as err:  # truncated or malformed data found while decoding
            raise DatasetError(f"cannot read {name} as an image ({err}); replace or remove the file") from err
    if channels == 1:
        out = out.convert("L")
    if size is not None and out.size != (size, size):
        out = out.resize((size, size), Image.BILINEAR)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
