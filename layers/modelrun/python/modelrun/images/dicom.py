"""DICOM Part 10 bytes to frames for the transforms, with patient data kept inside this module.

pydicom and its pylibjpeg plugins are imported here only when a DICOM file arrives, so a PNG prediction's cold start
does not pay for them. The steps are the standard's: the header is read and checked first (pixel data present, a
transfer syntax an installed decoder handles, rows x columns x frames within ``MAX_IMAGE_PIXELS``, and for native
pixel data the byte count the header promises); only then are the selected frames decoded. Greyscale goes through
the Modality LUT to real values (float32 arrays in :class:`~modelrun.images.image.Frame`) with the file's VOI as the
fallback the model's own window overrides; colour (RGB, YBR_*, PALETTE COLOR) becomes 8-bit RGB.

Patient data never leaves: decoder exceptions are replaced by our own messages raised outside the handler, so the
decoder's exception is neither their cause nor their context (pydicom's text can quote attribute values, and a chained
exception prints in any logged traceback), pydicom's warnings and
logger are silenced, and the metadata a result carries is an allow-list of UIDs and technical attributes whose
values are checked against their value representation's character set.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
import zlib
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from PIL import Image

from modelrun.errors import DicomWithoutPixelData, ImageTooLarge, InvalidDicom, UnsupportedTransferSyntax
from modelrun.images.image import DecodedImage, Frame
from modelrun.images.limits import Limits
from modelrun.images.voi import Lut, Range, Voi, Window

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MAX_FRAMES: Final = 64
"""The most frames a model with ``"frames": "all"`` predicts from one file (each is one image for the model)."""

EXACT_INTERCEPT: Final = 2**23
"""The largest integral rescale intercept whose sums with 16-bit stored values all stay below 2**24 (exact in
float32)."""

PREAMBLE: Final = 128
MARKER: Final = b"DICM"

DEFLATED: Final = "1.2.840.10008.1.2.1.99"
INFLATE_BYTES_PER_PIXEL: Final = 8
"""A deflated file may inflate to this many bytes per ``MAX_IMAGE_PIXELS`` pixel before it counts as a bomb."""

_UID: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
_CODE_STRING: Final = re.compile(r"[A-Z0-9_ ]{1,16}")
_GREY: Final = ("MONOCHROME1", "MONOCHROME2")
_COLOUR: Final = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420", "PALETTE COLOR")
_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    return data[PREAMBLE : PREAMBLE + len(MARKER)] == MARKER


def decode_dicom(data: bytes, limits: Limits, frames: str = "first") -> DecodedImage:
    """Decode a DICOM Part 10 file's selected frames.

    Args:
        data: the file's bytes (already within ``limits.max_bytes`` and recognised by :func:`is_dicom`).
        limits: ``max_pixels`` bounds rows x columns x frames, checked before any pixel is decoded.
        frames: the model's frame policy: ``first``, ``middle`` or ``all`` (at most :data:`MAX_FRAMES`).

    Returns:
        The selected frames and the allow-listed metadata (``dicom``): UIDs, modality, rows, columns, frames, ...

    Raises:
        InvalidDicom: the header or the pixel data is damaged, truncated or shorter than the header promises.
        DicomWithoutPixelData: a readable object that holds no image.
        UnsupportedTransferSyntax: pixel data in a syntax no installed decoder handles.
        ImageTooLarge: rows x columns x frames over ``limits.max_pixels``, more than :data:`MAX_FRAMES` frames for
            ``all``, or a deflated file that inflates past its bound.
    """
    _quiet_pydicom()
    ds = _read(data, limits)
    syntax = _transfer_syntax(ds)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        if "Rows" in ds or "Columns" in ds or _is_image_class(ds):
            # An image without its pixel data: the file was cut between two elements or inside an element's header,
            # which pydicom reads as a clean end.
            raise InvalidDicom(
                "the DICOM file is an image object but ends before its pixel data (truncated); send the whole file"
            )
        raise DicomWithoutPixelData(
            f"the DICOM file is {_sop_class_words(ds)} and holds no pixel data; send a DICOM image",
            sop_class_uid=_allowed_uid(ds, "SOPClassUID"),
        )
    rows, columns, count = _dimensions(ds)
    pixels = rows * columns * count
    if pixels > limits.max_pixels:
        raise ImageTooLarge(
            f"the DICOM image is {columns}x{rows} pixels x {count} frame(s) = {pixels} pixels, over the limit of "
            f"{limits.max_pixels} pixels; send a smaller image",
            width=columns,
            height=rows,
            frames=count,
            pixels=pixels,
            max_pixels=limits.max_pixels,
        )
    indexes = _select(frames, count)
    decoder = _decoder(syntax)
    if not syntax.is_encapsulated:
        _check_native_length(ds, rows, columns, count)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    arrays = [_decode_frame(decoder, ds, index, count) for index in indexes]
    metadata = _metadata(ds, rows, columns, count)
    if photometric in _GREY:
        return DecodedImage(_grey_frames(ds, arrays, indexes, photometric), frame_count=count, dicom=metadata)
    if photometric in _COLOUR:
        rgb = [Image.fromarray(_colour_8bit(ds, array, photometric), mode="RGB") for array in arrays]
        return DecodedImage(
            tuple(Frame(image, index) for image, index in zip(rgb, indexes, strict=True)),
            frame_count=count,
            dicom=metadata,
        )
    raise InvalidDicom(
        "the DICOM image's photometric interpretation is missing or not one of "
        f"{', '.join(_GREY + _COLOUR)}; send a greyscale or colour image",
        photometric_interpretation=_code_string(photometric),
    )


# --- reading the header -------------------------------------------------------------------------------------------


def _read(data: bytes, limits: Limits) -> Dataset:
    from pydicom import dcmread

    if _syntax_in_meta(data) == DEFLATED:
        _check_inflated_size(data, limits)
    dataset: Dataset | None = None
    _READ_REPORTS.local.ended_early = False
    try:
        dataset = dcmread(io.BytesIO(data))
    except Exception:  # pydicom's own errors too (InvalidDicomError, BytesLengthException)
        dataset = None
    if dataset is None:
        # Raised outside the handler, so the decoder's exception is neither the cause nor the context of ours.
        raise InvalidDicom("the DICOM file's header is damaged or truncated and cannot be read; send the file again")
    if _READ_REPORTS.local.ended_early:
        raise InvalidDicom(
            "the DICOM file ends inside one of its elements (truncated); send the whole file",
        )
    return dataset


def _syntax_in_meta(data: bytes) -> str | None:
    """The transfer syntax UID from the file meta group, read without pydicom (to bound a deflated file first)."""
    marker = b"\x02\x00\x10\x00UI"
    at = data.find(marker, PREAMBLE, PREAMBLE + 4096)
    if at < 0:
        return None
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    return data[at + 8 : at + 8 + length].rstrip(b"\x00 ").decode("ascii", errors="replace")


def _check_inflated_size(data: bytes, limits: Limits) -> None:
    """A deflated dataset inflates in pydicom without a bound: inflate it here first, bounded, to refuse a bomb."""
    bound = limits.max_pixels * INFLATE_BYTES_PER_PIXEL
    # The deflated part starts after the file meta group; inflating from any later offset would fail, and a zlib
    # error here is left for pydicom's read to report as a damaged file.
    start = _meta_end(data)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[start:], bound)
    except zlib.error:
        return
    if inflater.unconsumed_tail:
        raise ImageTooLarge(
            f"the deflated DICOM file inflates to more than {bound} bytes; send a smaller image", max_bytes=bound
        )


def _meta_end(data: bytes) -> int:
    """Where the file meta group ends: after its group length element (0002,0000), which counts the rest of it."""
    at = PREAMBLE + len(MARKER)
    if data[at : at + 6] == b"\x02\x00\x00\x00UL":
        return at + 12 + int.from_bytes(data[at + 8 : at + 12], "little")
    return at


def _transfer_syntax(ds: Dataset) -> Any:
    from pydicom.uid import UID

    raw = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if raw is None or not _UID.fullmatch(str(raw)):
        raise InvalidDicom("the DICOM file's meta information names no valid transfer syntax; send the file again")
    return UID(str(raw))


def _decoder(syntax: Any) -> Any:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        name = syntax.name if syntax.is_transfer_syntax else "an unknown transfer syntax"
        raise UnsupportedTransferSyntax(
            f"the DICOM file's pixel data is encoded as {name} ({syntax}), which no installed decoder handles; "
            "send it uncompressed or as JPEG, JPEG-LS, JPEG 2000 or RLE",
            transfer_syntax_uid=str(syntax),
        )
    return decoder


def _dimensions(ds: Dataset) -> tuple[int, int, int]:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        count = int(ds.get("NumberOfFrames") or 1)
    except Exception:  # any error of a hostile file's values: the text never leaves
        rows = columns = count = 0
    if rows <= 0 or columns <= 0 or count <= 0:
        raise InvalidDicom(
            "the DICOM image's rows, columns or number of frames are missing or not positive integers; "
            "send the file again"
        )
    return rows, columns, count


def _check_native_length(ds: Dataset, rows: int, columns: int, count: int) -> None:
    """Native pixel data must hold what the header promises; shorter means truncated (longer is padding)."""
    keyword = next(keyword for keyword in _PIXEL_KEYWORDS if keyword in ds)
    try:
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated) if keyword == "PixelData" else (32 if keyword == "FloatPixelData" else 64)
        value = ds[keyword].value
        actual = len(value) if value is not None else 0
    except Exception:  # any error of a hostile file's values: the text never leaves
        samples = bits = 0
    if samples <= 0 or bits <= 0:
        raise InvalidDicom("the DICOM image's bits allocated or samples per pixel are missing or invalid")
    expected = -(-(rows * columns * count * samples * bits) // 8)
    if photometric_is_422(ds):
        expected = expected * 2 // 3
    if actual < expected:
        raise InvalidDicom(
            f"the DICOM file's pixel data is {actual} bytes, shorter than the {expected} bytes its header promises "
            "(truncated); send the whole file",
            pixel_data_bytes=actual,
            expected_bytes=expected,
        )


def photometric_is_422(ds: Dataset) -> bool:
    """YBR_FULL_422 native data stores two luminance samples per chroma pair: 2/3 of the full size."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422"


def _select(policy: str, count: int) -> list[int]:
    if policy == "all":
        if count > MAX_FRAMES:
            raise ImageTooLarge(
                f"the DICOM file has {count} frames, over the limit of {MAX_FRAMES} for a model that predicts every "
                "frame; send fewer frames per file",
                frames=count,
                max_frames=MAX_FRAMES,
            )
        return list(range(count))
    if policy == "middle":
        return [count // 2]
    return [0]


# --- decoding pixels ----------------------------------------------------------------------------------------------


def _decode_frame(decoder: Any, ds: Dataset, index: int, count: int) -> np.ndarray:
    array: np.ndarray | None = None
    try:
        array, _ = decoder.as_array(ds, index=index if count > 1 else None, as_rgb=True)
    except Exception:  # any decoder plugin's own error type: the text never leaves
        array = None
    except BaseException as exc:
        # A Rust plugin's panic on hostile data (pyo3's PanicException) derives from BaseException only.
        if type(exc).__name__ != "PanicException":
            raise
        array = None
    if array is None:
        raise InvalidDicom(
            "the DICOM file's pixel data is damaged or truncated and cannot be decoded; send the file again"
        )
    return np.asarray(array)


def _grey_frames(ds: Dataset, arrays: list[np.ndarray], indexes: list[int], photometric: str) -> tuple[Frame, ...]:
    values: list[np.ndarray] = []
    try:
        values = [_real_values(ds, array) for array in arrays]
    except Exception:  # any error of a hostile file's values: the text never leaves
        values = []
    if not values:
        raise InvalidDicom("the DICOM image's rescale slope, intercept or modality LUT is invalid")
    voi = _file_voi(ds) or Range.of(np.stack(values))
    invert = photometric == "MONOCHROME1"
    return tuple(Frame(frame, index, voi=voi, invert=invert) for frame, index in zip(values, indexes, strict=True))


def _real_values(ds: Dataset, array: np.ndarray) -> np.ndarray:
    """A frame's stored values through the Modality LUT (C.11.1) as float32: Hounsfield units for CT.

    Raises:
        Exception: whatever a hostile file's rescale or LUT values make pydicom or numpy raise.
    """
    from pydicom.pixels import apply_modality_lut

    if (
        not ds.get("ModalityLUTSequence")
        and "RescaleSlope" in ds
        and "RescaleIntercept" in ds
        and array.dtype.kind in "iu"
        and array.dtype.itemsize <= 2
    ):
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        if slope == 1.0 and intercept.is_integer() and abs(intercept) <= EXACT_INTERCEPT:
            # Every value and sum is an integer float32 holds exactly: one float32 add gives what pydicom's float64
            # rescale rounds to, without its two float64 copies of the frame.
            return np.add(array, np.float32(intercept), dtype=np.float32)
    return np.asarray(apply_modality_lut(array, ds), dtype=np.float32)


def _file_voi(ds: Dataset) -> Voi | None:
    """The file's first window, else its first VOI LUT, else None; a malformed one counts as absent."""
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is not None and width is not None:
            first_center = float(center[0] if _is_multi(center) else center)
            first_width = float(width[0] if _is_multi(width) else width)
            function = str(ds.get("VOILUTFunction") or "LINEAR").strip().lower()
            if function in ("linear", "linear_exact", "sigmoid") and _window_fits(first_width, function):
                return Window(first_center, first_width, function)
        sequence = ds.get("VOILUTSequence")
        if sequence:
            item = sequence[0]
            descriptor = [int(value) for value in item.LUTDescriptor]
            table = np.asarray(item.LUTData, dtype=np.float64).ravel()
            bits = descriptor[2] if 1 <= descriptor[2] <= 16 else 16
            if table.size:
                return Lut(descriptor[1], tuple(np.clip(table / (2**bits - 1) * 255.0, 0.0, 255.0).tolist()))
    except Exception:  # any error of a hostile file's values: the text never leaves
        return None
    return None


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _window_fits(width: float, function: str) -> bool:
    return bool(np.isfinite(width)) and (width >= 1 if function == "linear" else width > 0)


def _colour_8bit(ds: Dataset, array: np.ndarray, photometric: str) -> np.ndarray:
    """Colour pixels as 8-bit RGB: a palette applied, higher bit depths scaled down to 0..255."""
    bits = 0
    try:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = np.asarray(apply_color_lut(array, ds))
            bits = 16 if array.dtype.itemsize > 1 else 8
        else:
            bits = int(ds.get("BitsStored") or array.dtype.itemsize * 8)
    except Exception:  # any error of a hostile file's values: the text never leaves
        bits = 0
    if not 1 <= bits <= 32:
        raise InvalidDicom("the DICOM image's colour palette or bit depth is invalid")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidDicom("the DICOM colour image does not have three samples per pixel")
    if array.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(array)
    scaled = np.asarray(array, dtype=np.float64) / (2.0**bits - 1) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- what may leave: the allow-list ---------------------------------------------------------------------------


def _metadata(ds: Dataset, rows: int, columns: int, count: int) -> dict[str, Any]:
    """UIDs and technical attributes only, each value checked against its value representation's characters."""
    shown: dict[str, Any] = {
        "sop_instance_uid": _allowed_uid(ds, "SOPInstanceUID"),
        "series_instance_uid": _allowed_uid(ds, "SeriesInstanceUID"),
        "study_instance_uid": _allowed_uid(ds, "StudyInstanceUID"),
        "sop_class_uid": _allowed_uid(ds, "SOPClassUID"),
        "transfer_syntax_uid": _allowed_uid(getattr(ds, "file_meta", None), "TransferSyntaxUID"),
        "modality": _code_string(str(ds.get("Modality", ""))),
        "photometric_interpretation": _code_string(str(ds.get("PhotometricInterpretation", ""))),
        "rows": rows,
        "columns": columns,
        "number_of_frames": count,
    }
    try:
        shown["bits_stored"] = int(ds.get("BitsStored")) if ds.get("BitsStored") is not None else None
    except Exception:  # any error of a hostile file's values: the text never leaves
        shown["bits_stored"] = None
    return {key: value for key, value in shown.items() if value is not None}


def _allowed_uid(ds: Any, keyword: str) -> str | None:
    value = str(getattr(ds, keyword, "") or "").strip() if ds is not None else ""
    return value if len(value) <= 64 and _UID.fullmatch(value) else None


def _code_string(value: str) -> str | None:
    value = value.strip()
    return value if _CODE_STRING.fullmatch(value) else None


def _is_image_class(ds: Dataset) -> bool:
    """Whether the SOP class (the dataset's, else the file meta's) is one pydicom names as an image storage class."""
    from pydicom.uid import UID

    uid = _allowed_uid(ds, "SOPClassUID") or _allowed_uid(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
    return uid is not None and "Image Storage" in UID(uid).name


def _sop_class_words(ds: Dataset) -> str:
    """The SOP class in words (``a Basic Text SR``) when pydicom knows it, else its UID, else "an object"."""
    from pydicom.uid import UID

    uid = _allowed_uid(ds, "SOPClassUID") or _allowed_uid(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
    if uid is None:
        return "an object"
    name = UID(uid).name
    if name == uid:
        return f"an object of SOP class {uid}"
    name = name.removesuffix(" Storage")
    first = name.split(" ", 1)[0]
    # An acronym is read letter by letter: "an RT Plan", "an SR"; a word by its first letter: "a Basic Text SR".
    vowel_sound = first[:1] in ("AEFHILMNORSX" if first.isupper() and len(first) <= 4 else "AEIOU")
    article = "an" if vowel_sound else "a"
    return f"{article} {name} ({uid})"


class _ReadReports(logging.Handler):
    """Takes pydicom's log records in place of any log: notes, per thread, a file that ends inside an element (pydicom
    reads such a file up to there and only logs it) and drops every record (they can quote attribute values)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if "end of file" in str(record.msg).lower():
            self.local.ended_early = True


_READ_REPORTS: Final = _ReadReports()


def _quiet_pydicom() -> None:
    """pydicom's warnings and log records can quote attribute values; none may reach a log."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    pydicom_logger = logging.getLogger("pydicom")
    pydicom_logger.handlers = [_READ_REPORTS]
    pydicom_logger.propagate = False
    pydicom_logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
