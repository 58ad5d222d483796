"""Reading volumes and writing JSON, with one-line errors that name the file.

Every volume is returned the way nibabel returns NIfTI data, whatever the file format:

* ``array``: the voxel data in (i, j, k) = (x, y, z) index order, in the file's own dtype;
* ``affine``: the 4x4 map from voxel index (i, j, k, 1) to RAS world coordinates in mm.

NIfTI (``.nii``, ``.nii.gz``) is read with nibabel (``img.affine``: sform if set, else qform).
MetaImage (``.mha``, ``.mhd``) is read with ITK, whose world frame is LPS; as in MONAI's
``ITKReader``, the ITK array (z, y, x) is transposed to (x, y, z) and the LPS affine
``[[D @ diag(spacing), origin], [0, 1]]`` (D = ITK direction matrix) is turned into RAS by
negating its first two rows. The same voxels saved as NIfTI and as MetaImage by ITK therefore
give identical arrays and affines here.

``spacing`` is the column norms of the affine's 3x3 part (as MONAI's ``affine_to_spacing``) and
``orientation`` the axis codes of ``nibabel.aff2axcodes(affine)`` joined, e.g. ``"LPS"``: the
world direction in which each array axis increases.

Any failure of the underlying library (missing, truncated or corrupt file, unsupported format,
wrong number of dimensions) is raised as :class:`DatasetError` whose message is one line
``"<path>: <what is wrong>"``. NIfTI data is read in full, not memory-mapped, so that a truncated
file fails here and not later inside a data loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np

__all__ = [
    "DatasetError",
    "NIFTI_EXTENSIONS",
    "ITK_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "Volume",
    "volume_extension",
    "read_volume",
    "affine_to_spacing",
    "affine_to_orientation",
    "write_json",
    "read_json",
]

PathLike = Union[str, os.PathLike]

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
ITK_EXTENSIONS = (".mha", ".mhd")
VOLUME_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS

# LPS <-> RAS: negate the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MAX_REASON_CHARS = 300


class DatasetError(ValueError):
    """A problem with the dataset: ``problems`` is the list of one-line messages, each naming a file.

    ``str(error)`` is the problems joined by newlines, so printing it lists one problem per line.
    """

    def __init__(self, problems: Union[str, Iterable[str]]) -> None:
        self.problems = [problems] if isinstance(problems, str) else [str(p) for p in problems]
        if not self.problems:
            raise ValueError("DatasetError needs at least one problem.")
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Volume:
    """One volume: ``array`` in (x, y, z) order and ``affine`` voxel -> RAS mm (see module docstring)."""

    path: Path
    array: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> Tuple[float, float, float]:
        return affine_to_spacing(self.affine)

    @property
    def orientation(self) -> str:
        return affine_to_orientation(self.affine)


def affine_to_spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel size in mm along each array axis: ``||affine[:3, j]||`` for j = 0, 1, 2."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


def affine_to_orientation(affine: np.ndarray) -> str:
    """Axis codes of the affine, e.g. ``"LPS"``; ``"?"`` for an axis without a direction (singular affine)."""
    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    return "".join(c if c is not None else "?" for c in codes)


def volume_extension(path: PathLike) -> Optional[str]:
    """The volume extension of ``path`` (lower case, e.g. ``".nii.gz"``), or None if it is not a volume file."""
    name = os.fspath(path).lower()
    for ext in VOLUME_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text


def _reason(exc: BaseException) -> str:
    """A one-line description of a library exception (ITK's source location and object address dropped)."""
    text = str(exc)
    match = re.search(r"Description:\s*(.+)", text)
    if match:
        text = match.group(1)
    text = re.sub(r"^.*?ITK ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text, flags=re.DOTALL)
    text = _one_line(text)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def _captured_native_output():
    """Capture what C++ code writes straight to file descriptors 1 and 2 (MetaIO reports errors there).

    Yields a list that receives the captured text on exit, so the caller can put it in its one-line error.
    """
    captured: List[str] = []
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (e.g. a daemon): nothing to capture
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


def _check_ndim(path: Path, shape: Sequence[int], ndim: Optional[int]) -> None:
    if ndim is not None and len(shape) != ndim:
        raise DatasetError(
            f"{path}: expected a {ndim}D volume, got shape {tuple(int(s) for s in shape)} ({len(shape)}D)"
        )


def _read_nifti(path: Path, ndim: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    try:
        img = nib.load(str(path), mmap=False)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError, ...)
        raise DatasetError(f"{path}: cannot read NIfTI header ({_reason(exc)})") from None
    _check_ndim(path, img.shape, ndim)
    try:
        array = np.asanyarray(img.dataobj)
        affine = np.array(img.affine, dtype=np.float64)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read NIfTI data, the file may be truncated ({_reason(exc)})") from None
    return array, affine


# ITK component type (ImageIOBase.GetComponentTypeAsString) -> wrapped ITK pixel type name that holds it
# exactly; anything else is read as double.
_ITK_PIXEL_TYPES = {
    "unsigned_char": "UC",
    "char": "SS",
    "short": "SS",
    "unsigned_short": "US",
    "int": "SI",
    "unsigned_int": "UI",
    "unsigned_long": "UL",
    "float": "F",
    "double": "D",
}


def _read_itk(path: Path, ndim: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    import itk  # imported here: ITK's first use costs seconds, and NIfTI-only datasets never need it

    itk.ProcessObject.SetGlobalWarningDisplay(False)  # keep ITK's C++ warnings off stderr
    stage = "header"
    native: List[str] = []
    try:
        with _captured_native_output() as native:
            image_io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
            if image_io is None:
                raise DatasetError(f"{path}: not a readable MetaImage file")
            image_io.SetFileName(str(path))
            image_io.ReadImageInformation()
            dims = image_io.GetNumberOfDimensions()
            components = image_io.GetNumberOfComponents()
            component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
            shape = [int(image_io.GetDimensions(i)) for i in range(dims)]
            _check_ndim(path, shape, ndim)
            if components != 1:
                raise DatasetError(f"{path}: expected one value per voxel, got {components} components")
            stage = "data"
            image = itk.imread(str(path), getattr(itk, _ITK_PIXEL_TYPES.get(component, "D")))
            array = np.asarray(itk.array_from_image(image)).T  # ITK (z, y, x) -> (x, y, z)
            direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
            spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
            origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    except DatasetError:
        raise
    except Exception as exc:
        # MetaIO's own report (e.g. "data not read completely ideal = 65536 : actual = 32620") says more than
        # the exception, whose errno-based "Reason" is often unrelated.
        reason = _one_line(native[0]) if native and native[0].strip() else _reason(exc)
        what = "data, the file may be truncated" if stage == "data" else "header"
        raise DatasetError(f"{path}: cannot read MetaImage {what} ({reason})") from None
    rank = min(len(spacing), 3)  # a 2D or 4D image (only read with ndim=None) keeps a 4x4 spatial affine
    affine_lps = np.eye(4)
    affine_lps[:rank, :rank] = (direction @ np.diag(spacing))[:rank, :rank]
    affine_lps[:rank, 3] = origin[:rank]
    return np.ascontiguousarray(array), _LPS_TO_RAS @ affine_lps


def read_volume(path: PathLike, ndim: Optional[int] = 3) -> Volume:
    """Read a ``.nii``, ``.nii.gz``, ``.mha`` or ``.mhd`` file into a :class:`Volume`.

    Args:
        path: the file.
        ndim: the required number of array dimensions (checked from the header, before the data
            is read); None accepts any.

    Raises:
        DatasetError: one line naming ``path``: missing file, unknown extension, unreadable or
            truncated file, or a volume that is not ``ndim``-D.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    ext = volume_extension(path)
    if ext is None:
        raise DatasetError(f"{path}: unknown volume format (expected one of {', '.join(VOLUME_EXTENSIONS)})")
    reader = _read_nifti if ext in NIFTI_EXTENSIONS else _read_itk
    array, affine = reader(path, ndim)
    return Volume(path=path, array=array, affine=affine)


_SCALAR_LIST = re.compile(r"\[\s*\n\s*([^\[\]{}]*?)\s*\n\s*\]")


def _compact_scalar_lists(text: str) -> str:
    """Put each list of numbers/strings of indented JSON on one line (``"shape": [8, 8, 4]``)."""
    return _SCALAR_LIST.sub(lambda m: "[" + ", ".join(re.split(r",\s*\n\s*", m.group(1))) + "]", text)


def sha256_file(path: PathLike) -> str:
    """SHA-256 hex digest of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_lps_array(img) -> np.ndarray:
    """The array of a nibabel image reoriented so that axis 0 runs to the left, axis 1 posterior, axis 2 superior."""
    import nibabel as nib

    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                                nib.orientations.axcodes2ornt(("L", "P", "S")))
    return nib.orientations.apply_orientation(np.asanyarray(img.dataobj), transform)


def write_png(figure, path: PathLike, dpi: int) -> str:
    """Save a matplotlib ``figure`` as a PNG with a 256-colour palette (keeps committed figures small); the
    parent folder is created. Returns the path as a string."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as rendered:
        rendered.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(str(path), optimize=True)
    return str(path)


def write_json(obj, path: PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The parent folder is created if needed. Either the complete file exists afterwards or, on
    error, nothing new is left behind.
    """
    path = Path(path)
    text = _compact_scalar_lists(json.dumps(obj, indent=2)) + "\n"  # serialise first: an error here leaves no file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: PathLike, what: str = "JSON file") -> dict:
    """Read a JSON object from ``path``; :class:`DatasetError` naming the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such {what}")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level, got {type(obj).__name__}")
    return obj
