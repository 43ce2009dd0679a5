"""Write phantom slices (scripts/ct_phantom.py) as CT DICOM files with pydicom: the sample series of the medical demo.

Each file is a CT Image Storage object with valid file meta: stored values are HU + 1024 (unsigned, 12 of 16
bits) with Rescale Slope 1 and Rescale Intercept -1024, the soft-tissue window as the file's Window Center and
Width, 3 mm pixels and 2.5 mm slices with their positions, and a patient who is obviously not one ("ANON^DEMO").
Every UID is derived from fixed text (``generate_uid`` with entropy sources, under pydicom's root; ``compress`` keeps
the instance UID), and nothing records the time, so writing the same slices again gives the same bytes.

What varies from file to file is how the pixels are stored: the transfer syntax (explicit and implicit VR little
endian, deflated, explicit VR big endian, RLE lossless, JPEG 2000 lossless), one MONOCHROME1 file, and one file
holding several slices as frames (a CT Image object with Number of Frames; an Enhanced CT object would need the
functional group sequences, which the platform does not read).

A MONOCHROME1 file shows its lowest values white, so a viewer or the platform inverts it after the window. Its
Modality LUT output is therefore the phantom's HU mirrored about the window's centre: ``2 * (40 - 0.5) - HU =
79 - HU`` (stored ``3071 - HU`` with intercept -2992), and its own window is centred on 39 (the mirror of 40).
Windowed with centre 40 and width 400 and then inverted, it gives exactly the grey levels of the plain file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from scripts.ct_phantom import (
    PIXEL_SPACING_MM,
    RESCALE_INTERCEPT,
    SIDE,
    STORED_MAX,
    WINDOW_CENTER,
    WINDOW_WIDTH,
    Z_UNIT_MM,
    Phantom,
    random_phantom,
)

UID_TEXT = "modelrun synthetic CT demo"
ENCAPSULATED = {RLELossless, JPEG2000Lossless}
# The Modality LUT output of a MONOCHROME1 file is MIRROR - HU: HU reflected about the window's centre - 0.5.
MIRROR = round(2 * (WINDOW_CENTER - 0.5))


def uid(*parts: str) -> UID:
    """A UID under pydicom's root derived only from ``parts`` (the same on every run)."""
    return generate_uid(entropy_srcs=[UID_TEXT, *parts])


STUDY_UID = uid("study")
SERIES_UID = uid("series")
FRAME_OF_REFERENCE_UID = uid("frame of reference")


@dataclass(frozen=True)
class SeriesFile:
    """One file of the series: its slices (one, or several as frames) and how it is stored."""

    stem: str
    instance: int  # Instance Number, from 1
    slices_hu: Sequence[NDArray[np.int16]]
    z_mm: Sequence[float]  # the table position of each slice
    transfer_syntax: UID
    monochrome1: bool = False


def stored_values(hu: NDArray[np.int16], monochrome1: bool) -> tuple[NDArray[np.uint16], int]:
    """The stored pixel values of one slice and the Rescale Intercept that maps them back (slope 1)."""
    values = hu.astype(np.int32) - RESCALE_INTERCEPT
    if monochrome1:
        values = STORED_MAX - values  # modality output = stored + (MIRROR - (STORED_MAX + RESCALE_INTERCEPT))
        return values.astype(np.uint16), MIRROR - (STORED_MAX + RESCALE_INTERCEPT)
    return values.astype(np.uint16), RESCALE_INTERCEPT


def ct_dataset(item: SeriesFile) -> Dataset:
    """The file's dataset with its file meta, pixels compressed when the transfer syntax says so."""
    sop_uid = uid("instance", item.stem)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("implementation")
    meta.ImplementationVersionName = "MODELRUN_CTDEMO"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "modelrun synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic CT demo (not a patient)"
    ds.SeriesDescription = "Synthetic abdomen phantom, soft tissue"
    ds.PatientName = "ANON^DEMO"
    ds.PatientID = "ANON-DEMO"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.SliceThickness = f"{SLICE_STEP * Z_UNIT_MM:g}"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = item.instance
    half = (SIDE - 1) / 2 * PIXEL_SPACING_MM
    ds.ImagePositionPatient = [f"{-half:g}", f"{-half:g}", f"{item.z_mm[0]:g}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{item.z_mm[0]:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if item.monochrome1 else "MONOCHROME2"
    ds.Rows = ds.Columns = SIDE
    ds.PixelSpacing = [f"{PIXEL_SPACING_MM:g}", f"{PIXEL_SPACING_MM:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    centre = MIRROR - WINDOW_CENTER if item.monochrome1 else WINDOW_CENTER
    ds.WindowCenter = f"{centre:g}"
    ds.WindowWidth = f"{WINDOW_WIDTH:g}"
    ds.WindowCenterWidthExplanation = "SOFT TISSUE"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US" if item.monochrome1 else "HU"

    frames = [stored_values(hu, item.monochrome1) for hu in item.slices_hu]
    ds.RescaleIntercept = str(frames[0][1])
    pixels = np.stack([values for values, _ in frames]) if len(frames) > 1 else frames[0][0]
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
        ds.SpacingBetweenSlices = f"{SLICE_STEP * Z_UNIT_MM:g}"
    if item.transfer_syntax in ENCAPSULATED:
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds.compress(item.transfer_syntax, pixels, generate_instance_uid=False)
    else:
        big = item.transfer_syntax == ExplicitVRBigEndian
        ds.PixelData = pixels.astype(">u2" if big else "<u2").tobytes()
        meta.TransferSyntaxUID = item.transfer_syntax
    return ds


def dicom_bytes(item: SeriesFile) -> bytes:
    """The file's bytes: preamble, file meta and dataset in its transfer syntax."""
    buffer = io.BytesIO()
    ct_dataset(item).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


TRANSFER_SYNTAX_NAMES = {
    ExplicitVRLittleEndian: "explicit VR little endian",
    ImplicitVRLittleEndian: "implicit VR little endian",
    DeflatedExplicitVRLittleEndian: "deflated explicit VR little endian",
    ExplicitVRBigEndian: "explicit VR big endian",
    RLELossless: "RLE lossless",
    JPEG2000Lossless: "JPEG 2000 lossless",
}


# --- the committed sample series ----------------------------------------------------------------------------------

SAMPLE_SEED = 2026  # apart from the training and evaluation streams of scripts/train_ct_model.py (seed 0)
SAMPLE_LESIONS = 3
# One phantom cut in 14 slices 5 mm apart around its organ: ten files of one slice, each stored its own way, then
# one file holding the last four slices as frames.
SINGLE_FILES: tuple[tuple[UID, bool], ...] = (
    (ExplicitVRLittleEndian, False),
    (ImplicitVRLittleEndian, False),
    (DeflatedExplicitVRLittleEndian, False),
    (RLELossless, False),
    (JPEG2000Lossless, False),
    (ExplicitVRBigEndian, False),
    (ExplicitVRLittleEndian, True),
    (JPEG2000Lossless, False),
    (RLELossless, False),
    (ExplicitVRLittleEndian, False),
)
MULTI_FRAME_SYNTAX = RLELossless
MULTI_FRAME_SLICES = range(5, 9)  # the series' slices 5..8, where the lesions are largest
FIRST_Z = -4.5  # slice i is at z = FIRST_Z + i * SLICE_STEP (z in units of Z_UNIT_MM)
SLICE_STEP = 0.5


def sample_phantom() -> Phantom:
    return random_phantom(np.random.default_rng(SAMPLE_SEED), lesions=SAMPLE_LESIONS)


def sample_series() -> list[tuple[SeriesFile, list[NDArray[np.uint8]]]]:
    """The sample files with the class mask of each of their slices, in file order: ``ct-000`` ... ``ct-009``
    hold one slice each, ``ct-010`` the slices ``MULTI_FRAME_SLICES`` as frames."""
    phantom = sample_phantom()
    count = len(SINGLE_FILES) + len(MULTI_FRAME_SLICES)
    z = [FIRST_Z + index * SLICE_STEP for index in range(count)]
    slices = [phantom.slice(value) for value in z]
    singles = [index for index in range(count) if index not in MULTI_FRAME_SLICES]
    series = []
    for number, (index, (syntax, monochrome1)) in enumerate(zip(singles, SINGLE_FILES, strict=True)):
        hu, mask = slices[index]
        item = SeriesFile(f"ct-{number:03d}", number + 1, [hu], [z[index] * Z_UNIT_MM], syntax, monochrome1)
        series.append((item, [mask]))
    number = len(SINGLE_FILES)
    item = SeriesFile(
        f"ct-{number:03d}",
        number + 1,
        [slices[index][0] for index in MULTI_FRAME_SLICES],
        [z[index] * Z_UNIT_MM for index in MULTI_FRAME_SLICES],
        MULTI_FRAME_SYNTAX,
    )
    series.append((item, [slices[index][1] for index in MULTI_FRAME_SLICES]))
    return series
