"""DICOM decoding: the syntaxes pydicom's own test files cover, header checks before any pixel, frames, the metadata
allow-list, and patient data kept out of errors, warnings and logs."""

from __future__ import annotations

import logging
import traceback
import warnings
from typing import Any

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from modelrun.errors import (
    DicomWithoutPixelData,
    ImageTooLarge,
    InvalidDicom,
    ModelrunError,
    UnsupportedTransferSyntax,
)
from modelrun.images.decode import Limits, decode_image, sniff_format
from tests.unit.conftest import PATIENT_NAME, dicom_bytes

MR_SMALL_FAMILY = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
]


def bundled(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not bundled with pydicom"
    with open(path, "rb") as file:
        return file.read()


def test_a_dicom_file_is_recognised_from_its_marker_not_its_name() -> None:
    # given MR_small's bytes, and the same bytes without the DICM marker
    data = bundled("MR_small.dcm")
    unmarked = data[:128] + b"XXXX" + data[132:]

    # when they are sniffed, then only the marked one is DICOM (MR_small's preamble holds a TIFF header: DICOM wins)
    assert sniff_format(data) == ("DICOM", True)
    assert sniff_format(unmarked) == ("TIFF", True)


def test_the_mr_small_family_decodes_to_the_same_values_in_every_transfer_syntax() -> None:
    # given one MR image in explicit and implicit VR, big endian, RLE, JPEG-LS lossless and JPEG 2000 lossless
    # when each is decoded
    decoded = {name: decode_image(bundled(name), Limits()) for name in MR_SMALL_FAMILY}

    # then every one holds exactly the values of the explicit little endian file, and the same VOI
    reference = np.asarray(decoded["MR_small.dcm"].frames[0].image)
    assert reference.shape == (64, 64)
    assert reference.max() > reference.min()
    for name, image in decoded.items():
        assert np.array_equal(np.asarray(image.frames[0].image), reference), name
        assert image.frames[0].voi == decoded["MR_small.dcm"].frames[0].voi, name


def test_the_mr_small_family_gives_byte_identical_model_inputs(identity_model) -> None:  # type: ignore[no-untyped-def]
    # given a grey model that windows, resizes and normalises
    model = identity_model(
        [
            {"op": "color", "mode": "L"},
            {"op": "window", "center": 600, "width": 1200},
            {"op": "resize", "size": [32, 32]},
            {"op": "normalize", "scale": 1 / 255},
        ],
        dims=["N", 1, 32, 32],
    )

    # when every file of the family is prepared
    tensors = [model.prepare(decode_image(bundled(name), Limits()).frames[0])[0]["images"] for name in MR_SMALL_FAMILY]

    # then the inputs are byte for byte the same
    assert all(tensor.tobytes() == tensors[0].tobytes() for tensor in tensors)
    assert float(tensors[0].max()) > float(tensors[0].min())


def test_a_truncated_native_file_is_invalid_dicom_naming_both_lengths() -> None:
    with pytest.raises(InvalidDicom) as caught:
        decode_image(bundled("MR_truncated.dcm"), Limits())
    assert caught.value.status == 400
    assert "8130 bytes" in caught.value.message
    assert "8192 bytes" in caught.value.message


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"])
@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.9])
def test_a_file_cut_short_anywhere_is_invalid_dicom(name: str, keep: float) -> None:
    data = bundled(name)
    with pytest.raises(InvalidDicom):
        decode_image(data[: int(len(data) * keep)], Limits())


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_corrupted_compressed_pixel_data_is_a_4xx_never_a_crash(name: str) -> None:
    # given compressed pixel data with its last kilobyte overwritten by noise
    data = bytearray(bundled(name))
    rng = np.random.default_rng(5)
    data[-1024:-8] = rng.integers(0, 256, 1016, dtype=np.uint8).tobytes()

    # when it is decoded, then it is an image or a client error, nothing else
    status = 200
    try:
        decode_image(bytes(data), Limits())
    except ModelrunError as exc:
        status = exc.status
    assert status == 200 or 400 <= status < 500


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("rtplan.dcm", "an RT Plan"),
        ("reportsi.dcm", "a Basic Text SR"),
        ("test-SR.dcm", "a Comprehensive SR"),
    ],
)
def test_an_object_without_pixel_data_names_its_sop_class(name: str, words: str) -> None:
    with pytest.raises(DicomWithoutPixelData) as caught:
        decode_image(bundled(name), Limits())
    assert caught.value.status == 422
    assert words in caught.value.message


def test_a_transfer_syntax_no_decoder_handles_is_415_naming_it() -> None:
    # given a file that says its pixel data is MPEG2 video
    data = dicom_bytes(np.zeros((4, 4), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.100")

    with pytest.raises(UnsupportedTransferSyntax) as caught:
        decode_image(data, Limits())
    assert caught.value.status == 415
    assert "MPEG2" in caught.value.message
    assert "1.2.840.10008.1.2.4.100" in caught.value.message


def test_rows_columns_and_frames_are_checked_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a 3-frame 10x10 file, a limit of 250 pixels, and a decoder that must not be reached
    from pydicom.pixels.decoders.base import Decoder

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Decoder, "as_array", never)
    data = dicom_bytes(np.zeros((3, 10, 10), np.uint16))

    # when it is decoded, then 300 pixels are refused from the header
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, Limits(max_pixels=250))
    assert caught.value.details["pixels"] == 300


@pytest.mark.parametrize(("policy", "indexes"), [("first", [0]), ("middle", [2]), ("all", [0, 1, 2, 3, 4])])
def test_the_frame_policy_selects_the_frames(policy: str, indexes: list[int]) -> None:
    # given five frames whose every pixel is the frame's index
    data = dicom_bytes(np.arange(5, dtype=np.uint16).reshape(5, 1, 1) * np.ones((5, 3, 3), np.uint16))

    decoded = decode_image(data, Limits(), policy)

    assert [frame.index for frame in decoded.frames] == indexes
    assert [float(np.asarray(frame.image)[0, 0]) for frame in decoded.frames] == indexes
    assert decoded.frame_count == 5


def test_more_frames_than_the_cap_are_refused_for_a_model_of_every_frame() -> None:
    data = dicom_bytes(np.zeros((65, 2, 2), np.uint8))
    with pytest.raises(ImageTooLarge):
        decode_image(data, Limits(), "all")
    assert len(decode_image(data, Limits(), "middle").frames) == 1


def test_colour_dicom_becomes_8_bit_rgb() -> None:
    for name in ("SC_rgb_rle_16bit.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm"):
        frame = decode_image(bundled(name), Limits()).frames[0]
        assert frame.image.mode == "RGB", name
        assert frame.voi is None


def test_the_metadata_holds_uids_and_technical_attributes_only() -> None:
    # given a file whose Modality has been abused to carry a name
    data = dicom_bytes(np.zeros((2, 3), np.uint16), Modality="Jane Doe", StudyDescription="Jane's scan")

    dicom = decode_image(data, Limits()).dicom

    assert dicom is not None
    assert set(dicom) <= {
        "sop_instance_uid",
        "series_instance_uid",
        "study_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "modality",
        "photometric_interpretation",
        "rows",
        "columns",
        "number_of_frames",
        "bits_stored",
    }
    assert "modality" not in dicom  # not a code string: left out
    assert (dicom["rows"], dicom["columns"], dicom["number_of_frames"]) == (2, 3, 1)
    assert "Jane" not in repr(dicom)


def damaged_with_patient_name() -> bytes:
    """A file whose pixel data is cut short, carrying the patient name (and a value pydicom would quote)."""
    data = dicom_bytes(np.zeros((8, 8), np.uint16), ImageComments=PATIENT_NAME)
    return data[:-20]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(damaged_with_patient_name(), id="short pixel data"),
        pytest.param(
            dicom_bytes(np.zeros((4, 4), np.uint16), NumberOfFrames="000000000001").replace(
                b"000000000001", b"SECRET^PATIE"
            ),
            id="patient name as frame count",
        ),
        pytest.param(
            dicom_bytes(np.zeros((4, 4), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.50")[:-4], id="bad jpeg"
        ),
    ],
)
def test_no_attribute_value_reaches_the_error_its_chain_its_traceback_the_logs_or_warnings(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # when a damaged file carrying the patient name is decoded, with every log and warning captured
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(ModelrunError) as caught:
            decode_image(data, Limits())

    # then the error is ours, chained to nothing, and the name appears nowhere
    error = caught.value
    assert 400 <= error.status < 500
    assert error.__cause__ is None
    assert error.__context__ is None
    printed = "".join(traceback.format_exception(error))
    everywhere = [printed, repr(error.to_dict()), caplog.text, *(str(w.message) for w in caught_warnings)]
    assert not any("SECRET" in text for text in everywhere)


def test_a_png_prediction_does_not_import_pydicom(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given a fresh interpreter that imports the predictor and predicts a PNG with a small model
    import subprocess
    import sys
    import textwrap

    from tests.modelfactory import make_model

    make_model(tmp_path)
    script = textwrap.dedent(
        f"""
        import io, sys
        from pathlib import Path
        from PIL import Image
        import modelrun.predict
        from modelrun.images.decode import Limits
        from modelrun.models.registry import ModelRegistry
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), "red").save(buffer, "PNG")
        predictor = modelrun.predict.Predictor(ModelRegistry(Path({str(tmp_path)!r})), Limits(), "tiny")
        result = predictor.predict(buffer.getvalue())
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in
                        ("pydicom", "pylibjpeg", "libjpeg", "openjpeg", "rle"))
        print(result["label"], loaded)
        """
    )

    # when it runs
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)

    # then the prediction was made and no DICOM module was loaded
    assert done.stdout.split() == ["red", "[]"]


def test_the_bundled_test_files_are_found_without_a_download(monkeypatch: pytest.MonkeyPatch) -> None:
    # given no network: any attempt to fetch a file fails the test
    import pydicom.data.data_manager as manager

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("pydicom tried to download a test file")

    monkeypatch.setattr(manager, "fetch_data_files", no_download, raising=False)
    monkeypatch.setattr(manager, "data_path_with_download", no_download, raising=False)

    # when every file of the MR_small family is looked up, then each is found locally
    assert all(get_testdata_file(name) for name in MR_SMALL_FAMILY)


def test_a_deflated_file_is_inflated_within_a_bound_before_pydicom_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the bundled deflated file (512x512 inflating to about 262 KB) and a bound of 8 bytes x 1,000 pixels
    import pydicom

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("pydicom read a deflated file past its bound")

    monkeypatch.setattr(pydicom, "dcmread", never)

    # when it is decoded, then it is refused as too large before pydicom inflates it
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(bundled("image_dfl.dcm"), Limits(max_pixels=1000))
    assert "inflates" in caught.value.message


def test_a_deflated_file_within_the_bound_decodes() -> None:
    frame = decode_image(bundled("image_dfl.dcm"), Limits()).frames[0]
    assert frame.image.size == (512, 512)


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept"),
    [
        pytest.param(np.int16, 1.0, -1024.0, id="CT"),
        pytest.param(np.uint16, 1.0, 0.0, id="no offset"),
        pytest.param(np.int16, 1.0, -(2.0**23), id="largest exact intercept"),
        pytest.param(np.uint16, 1.0, 2.0**23 + 1, id="intercept past it"),
        pytest.param(np.int16, 1.0, -1024.5, id="fractional intercept"),
        pytest.param(np.uint16, 0.37, -1000.25, id="slope"),
        pytest.param(np.uint8, 1.0, -3.0, id="8 bit"),
    ],
)
def test_the_modality_lut_gives_pydicoms_values_rounded_to_float32(dtype: Any, slope: float, intercept: float) -> None:
    # given stored values over the type's whole range, with a rescale slope and intercept
    info = np.iinfo(dtype)
    stored = np.linspace(info.min, info.max, 60).astype(dtype).reshape(6, 10)
    data = dicom_bytes(stored, slope=slope, intercept=intercept)

    # when decoded
    values = np.asarray(decode_image(data, Limits()).frames[0].image)

    # then every value is pydicom's float64 rescale rounded to float32, bit for bit
    expected = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    assert values.dtype == np.float32
    assert values.tobytes() == expected.tobytes()
