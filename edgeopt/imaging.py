"""Images from disk, task-neutral: decoding a file to RGB, the photographs scikit-image ships, seeded crops,
and byte-deterministic .npz files. Every image task builds its evaluation data from these.

Evaluation photographs are read from the installed scikit-image wheel's `skimage/data/` folder (from disk;
`skimage.data` loaders that download through pooch are never called). `split_photographs` holds whole
scenes out for calibration, so no calibration input is, or is cut from, an evaluation photograph, and
`plan_crops` plans deterministic random crops and flips of them (numpy's `Generator(seed)`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import zipfile
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgeopt.errors import UserError, one_line
from edgeopt.io.atomic import atomic_file

if TYPE_CHECKING:
    from PIL import Image

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_PHOTO_SIDE = 32  # a smaller shipped image is too small to cut crops from
AREA = (0.5, 1.0)  # random-resized crop: fraction of the photograph's area
RATIO = (3 / 4, 4 / 3)  # random-resized crop: aspect ratio (width / height) before resizing to a square
# Pillow modes of a 2-D 8-bit grayscale/colour image; anything else (I;16, F, multi-band) is not used.
MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


class Crop(NamedTuple):
    source: int  # index into the photographs
    box: tuple[int, int, int, int]  # left, top, right, bottom in source pixels
    flip: bool  # horizontal flip after resizing


class OnnxImageInput(NamedTuple):
    """An ONNX graph (read without its weights) and its one pixel input."""

    model: Any  # onnx.ModelProto
    input: Any  # its onnx.ValueInfoProto
    dims: list[int | str]  # static sizes, or the symbolic names ("?" where unnamed)
    shown: str  # "pixel_values [batch, 3, 224, 224]", for messages


def value_dims(value_info: Any) -> list[int | str]:
    """An ONNX value's dims: static sizes, or the symbolic names ("?" where unnamed)."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def onnx_image_input(path: Path, input_name: str | None, where: str, task: str) -> OnnxImageInput:
    """The graph's pixel input: `input_name`, or the only non-initializer input. One UserError line otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise UserError(f"{where}.path: cannot read ONNX file {path}: {one_line(err)}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    if input_name is not None:
        if input_name not in names:
            raise UserError(f"{where}.input_name: {input_name!r} is not an input of {path.name} "
                            f"(it has {', '.join(names) or 'none'})")
        chosen = next(i for i in inputs if i.name == input_name)
    elif len(inputs) == 1:
        chosen = inputs[0]
    else:
        raise UserError(f"{where}: {path.name} has {len(inputs)} inputs ({', '.join(names)}); {task} feeds one "
                        f"pixel tensor (set input_name if the others are optional)")
    dims = value_dims(chosen)
    return OnnxImageInput(model, chosen, dims, f"{chosen.name} [{', '.join(str(d) for d in dims)}]")


def read_rgb(path: Path, *, photograph: bool = False) -> Image.Image:
    """Decode `path` fully with Pillow and return it as RGB (alpha composited over white, EXIF orientation applied).

    photograph: also refuse multi-frame files and images smaller than MIN_PHOTO_SIDE.
    Raises UserError (one line, naming the file) for anything that is not a usable image.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            opened.load()
            img = ImageOps.exif_transpose(opened)
            img.load()
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise UserError(f"{path}: not an image Pillow can read ({one_line(err)})") from None
    if img.mode not in MODES:
        raise UserError(f"{path}: not an 8-bit grayscale or colour image (Pillow mode {img.mode})")
    if photograph and frames > 1:
        raise UserError(f"{path}: has {frames} frames, not one photograph")
    if photograph and min(img.size) < MIN_PHOTO_SIDE:
        raise UserError(f"{path}: {img.size[0]}x{img.size[1]} is smaller than {MIN_PHOTO_SIDE} pixels")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if "A" in img.mode or "a" in img.mode:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def skimage_data_dir() -> Path:
    """`skimage/data/` of the installed scikit-image, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("evaluation images need scikit-image (its shipped photographs)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def shipped_photographs() -> list[Path]:
    """The png/jpg files shipped in the scikit-image wheel that decode as one 2-D grayscale/colour image, sorted."""
    folder = skimage_data_dir()
    if not folder.is_dir():
        return []
    usable = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        try:
            read_rgb(path, photograph=True)
        except UserError:
            continue
        usable.append(path)
    return usable


def photo_group(path: Path) -> str:
    """Views of one scene share a group (motorcycle_left/right, chessboard_GRAY/RGB): the split keeps them together."""
    return Path(path).stem.split("_")[0].lower()


def split_photographs(
    photographs: Sequence[Path], n_eval: int, n_calibration: int, seed: int
) -> tuple[list[Path], list[Path]]:
    """Hold out whole photo groups for calibration, about n_calibration / (n_eval + n_calibration) of the
    photographs and at least one group; the rest is for evaluation. Both lists keep the input order."""
    groups: dict[str, list[Path]] = {}
    for p in photographs:
        groups.setdefault(photo_group(p), []).append(Path(p))
    if len(groups) < 2:
        raise UserError(
            f"need photographs of at least 2 different scenes to keep calibration apart from evaluation, "
            f"found {len(groups)} ({len(photographs)} photographs)"
        )
    target = max(1, round(len(photographs) * n_calibration / (n_eval + n_calibration)))
    order = np.random.default_rng([seed, 0]).permutation(sorted(groups))
    held: set[str] = set()
    count = 0
    for name in order[:-1]:  # the last group always stays in evaluation
        if count >= target:
            break
        held.add(str(name))
        count += len(groups[str(name)])
    calibration = [Path(p) for p in photographs if photo_group(p) in held]
    evaluation = [Path(p) for p in photographs if photo_group(p) not in held]
    return evaluation, calibration


def _crop_size(rng: np.random.Generator, width: int, height: int) -> tuple[int, int]:
    area = rng.uniform(*AREA) * width * height
    # Ratios for which a crop of this area fits inside the photograph, intersected with RATIO.
    fit_lo, fit_hi = area / (height * height), (width * width) / area
    lo, hi = max(RATIO[0], fit_lo), min(RATIO[1], fit_hi)
    if lo > hi:  # a very elongated photograph: the feasible ratio nearest RATIO
        lo = hi = fit_lo if fit_lo > RATIO[1] else fit_hi
    ratio = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    return w, h


def plan_crops(sizes: Sequence[tuple[int, int]], n: int, seed: int | Sequence[int]) -> list[Crop]:
    """n random-resized crops over photographs of the given (width, height): each photograph is used in turn
    (a fresh random order every round), with 50-100% of its area, an aspect ratio in 3/4..4/3 and a coin-flip
    horizontal flip. Deterministic in `seed`."""
    if not sizes:
        raise UserError("no photographs to cut evaluation images from")
    rng = np.random.default_rng(seed)
    crops = []
    order: list[int] = []
    for _ in range(n):
        if not order:
            order = [int(i) for i in rng.permutation(len(sizes))]
        source = order.pop(0)
        width, height = sizes[source]
        w, h = _crop_size(rng, width, height)
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        flip = bool(rng.random() < 0.5)
        crops.append(Crop(source, (left, top, left + w, top + h), flip))
    return crops


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def image_hashes(images: np.ndarray) -> list[str]:
    """sha256 of each image's bytes: identical inputs have identical hashes."""
    return [hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images]


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed .npz that `np.load` reads, byte-identical for identical arrays (fixed zip timestamps,
    unlike `np.savez`), so DVC sees an unchanged file when the data did not change. Atomic."""
    with atomic_file(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                         allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: evaluation data file not found (build the data first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:
        raise UserError(f"{path}: not a readable .npz file ({one_line(err)})") from None


def image_library_versions() -> dict[str, str]:
    """numpy (the crop generator), scikit-image (the photographs) and Pillow (decoding, resampling) versions."""
    out = {"numpy": np.__version__}
    for dist, key in (("scikit-image", "scikit-image"), ("pillow", "pillow")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out
