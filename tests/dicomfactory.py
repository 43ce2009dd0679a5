"""Small DICOM files for tests, written with pydicom: stored values, rescale, window and photometric chosen by the test.

Every file is a valid Part 10 file (128-byte preamble, ``DICM``, file meta) in Explicit VR Little Endian, so the
platform's decoder and the CLI's marker sniffing see what a scanner export looks like. Patient and free-text
attributes carry whatever the test passes: :class:`Markers` fills them with unique strings a privacy test then
looks for everywhere.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# The private creator block used for the marker in a private tag: group 0x0009, elements 0x0010 / 0x1000.
PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "MODELRUN TEST"


@dataclass(frozen=True)
class Markers:
    """Unique strings in every patient and free-text attribute a file can carry; none may leave the decoder."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10].upper())

    @property
    def patient_name(self) -> str:
        # The DICOM PN form: family^given. A leak may show it as stored or with the caret replaced.
        return f"ZZFAMILY{self.token}^ZZGIVEN{self.token}"

    @property
    def patient_id(self) -> str:
        return f"ZZPID{self.token}"

    @property
    def birth_date(self) -> str:
        return "19030417"  # a DA value; unusual enough that no result, log or time stamp contains it by chance

    @property
    def institution(self) -> str:
        return f"ZZINSTITUTION{self.token}"

    @property
    def study_description(self) -> str:
        return f"ZZSTUDY{self.token}"

    @property
    def referring_physician(self) -> str:
        return f"ZZREFERRER{self.token}^DOCTOR"

    @property
    def other_patient_id(self) -> str:
        return f"ZZOTHERPID{self.token}"

    @property
    def private_value(self) -> str:
        return f"ZZPRIVATE{self.token}"

    def strings(self) -> list[str]:
        """Every marker, plus each part of the PN values on its own (a leak might print a name split at ``^``)."""
        names = [self.patient_name, self.referring_physician]
        parts = [part for name in names for part in name.split("^")]
        spaced = [name.replace("^", " ") for name in names]
        return [
            *names,
            *parts,
            *spaced,
            self.patient_id,
            self.birth_date,
            self.institution,
            self.study_description,
            self.other_patient_id,
            self.private_value,
        ]


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    markers: Markers | None = None,
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance: int = 1,
) -> bytes:
    """A Part 10 file of ``pixels`` (rows x columns, or frames x rows x columns for a multi-frame file).

    Args:
        pixels: stored values, ``uint16`` or ``int16`` (signed pixel representation).
        photometric: ``MONOCHROME1`` (low values bright) or ``MONOCHROME2``.
        slope: Rescale Slope; with ``intercept`` the Modality LUT (stored -> e.g. Hounsfield units).
        intercept: Rescale Intercept.
        window: (center, width) written as the file's own VOI window.
        markers: patient and free-text values to write; anonymous-looking defaults without.
        modality: the Modality attribute.
        study_uid: Study Instance UID (generated when omitted); share it for a series.
        series_uid: Series Instance UID (generated when omitted).
        instance: Instance Number.
    """
    if pixels.dtype not in (np.uint16, np.int16):
        raise ValueError("dicom_bytes writes 16-bit stored values: pass uint16 or int16 pixels")
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    rows, columns = pixels.shape[-2:]
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.PatientName = markers.patient_name if markers else "ANONYMOUS"
    ds.PatientID = markers.patient_id if markers else "ANON"
    ds.PatientBirthDate = markers.birth_date if markers else ""
    if markers:
        ds.InstitutionName = markers.institution
        ds.StudyDescription = markers.study_description
        ds.ReferringPhysicianName = markers.referring_physician
        ds.OtherPatientIDs = markers.other_patient_id
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x00, "LO", markers.private_value)
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels.ndim == 3:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """A damaged copy: the file cut inside its pixel data (``keep`` of the pixel bytes stay), header intact."""
    cut = len(data) - int((1 - keep) * _pixel_bytes(data))
    return data[:cut]


def _pixel_bytes(data: bytes) -> int:
    # Pixel Data is the last element written, so its value is the file's tail: its length from the header.
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    return len(ds.PixelData)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ct_slice(size: int = 64, *, seed: int = 0, disc: int = 1000) -> np.ndarray:
    """A CT-like slice of stored values (``int16``, with intercept -1024 that is Hounsfield units + 1024): air
    around, soft tissue (~40 HU) in a body, and a bright disc (``disc`` HU) in its upper-left quarter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    hu = np.full((size, size), -1000.0)
    body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
    hu[body] = 40.0
    bright = (yy - size * 0.3) ** 2 + (xx - size * 0.3) ** 2 < (size * 0.12) ** 2
    hu[bright] = disc
    hu += rng.normal(0, 5, hu.shape)
    return np.round(hu + 1024).astype(np.int16)
