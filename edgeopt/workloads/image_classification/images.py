"""Images for image-classification, offline: evaluation and calibration sets, a user's image folder, preprocessing.

Evaluation data is built from the photographs the installed scikit-image wheel ships under `skimage/data/`
(read from disk; `skimage.data` loaders that download through pooch are never called). A few dozen photographs
are expanded into a few hundred inputs by deterministic random-resized crops and horizontal flips: numpy's
`Generator(seed)` plans every crop, Pillow (bilinear) renders it, so one seed gives byte-identical arrays with
the same Pillow. Calibration crops come from photographs held out of evaluation (views of one scene, such as
motorcycle_left/right, stay on one side), so no calibration input is, or is cut from, an evaluation photograph.

`build_eval_images` writes `eval.npz`, `calibration.npz` (uint8 [n, size, size, 3] plus each item's source file,
crop box and flip) and `manifest.json`, atomically, into one folder. `build_folder_images` writes the same files
from a user's class-per-subfolder folder (center crops, plus each image's `labels`, the model's class indices
from a class map), holding a seeded choice of its images out for calibration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationError

from edgeopt.errors import UserError
from edgeopt.imaging import (
    Crop,
    image_hashes,
    image_library_versions,
    images_sha256,
    one_line,
    plan_crops,
    read_npz,
    read_rgb,
    shipped_photographs,
    split_photographs,
    write_npz,
)
from edgeopt.imaging import photo_group as photo_group  # re-exported: the task's tests and callers use these names
from edgeopt.imaging import skimage_data_dir as skimage_data_dir
from edgeopt.io.atomic import atomic_dir
from edgeopt.results import Record

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
CROP_FRACTION = 0.875  # evaluation center crop: the TF EfficientNet eval pipeline's 224 / (224 + 32)

EVAL_FILE = "eval.npz"
CALIBRATION_FILE = "calibration.npz"
MANIFEST_FILE = "manifest.json"
FILES = (EVAL_FILE, CALIBRATION_FILE, MANIFEST_FILE)


class ImageEvalData(Record):
    """How `build_eval_images` expands the shipped photographs."""

    model_config = ConfigDict(extra="forbid")

    n_eval: int = Field(default=256, ge=1)
    n_calibration: int = Field(default=64, ge=1)
    seed: int = Field(default=0, ge=0)
    size: int = Field(default=IMAGE_SIZE, ge=32)


class ImageDataManifest(Record):
    """`manifest.json`: what `build_eval_images` wrote and from what."""

    kind: str = "skimage-photographs"
    seed: int
    size: int
    n_eval: int
    n_calibration: int
    eval_sources: list[str]  # photographs the evaluation crops were cut from
    calibration_sources: list[str]  # disjoint from eval_sources
    sha256: dict[str, str]  # "eval" / "calibration": sha256 of the uint8 image array's bytes (C order)
    files: list[str]
    versions: dict[str, str]  # scikit-image (the photographs), Pillow (the resampling), numpy (the generator)
    # An image folder: its path, the center crop, and whether eval.npz / calibration.npz carry `labels`.
    folder: str | None = None
    crop_fraction: float | None = None
    labelled: bool = False
    n_classes: int = 0  # distinct labels in the evaluation set


def render_crops(images: Sequence[Image.Image], crops: Sequence[Crop], size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [len(crops), size, size, 3]: each crop resized (bilinear) to a square, flipped if asked."""
    from PIL import Image

    out = np.empty((len(crops), size, size, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        tile = images[crop.source].resize((size, size), Image.Resampling.BILINEAR, box=crop.box)
        if crop.flip:
            tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(tile, dtype=np.uint8)
    return out


def _as_pil(images: Sequence[Any]) -> list[Image.Image]:
    from PIL import Image

    out = []
    for img in images:
        if isinstance(img, Image.Image):
            out.append(img.convert("RGB"))
            continue
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] array, got {arr.dtype} {arr.shape}")
        out.append(Image.fromarray(arr, mode="RGB"))
    return out


def expand(images: Sequence[Any], n: int, seed: int | Sequence[int], size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [n, size, size, 3] of deterministic random-resized crops and flips of `images`
    (PIL images or RGB uint8 [H, W, 3] arrays): the same seed gives byte-identical output."""
    pil = _as_pil(images)
    return render_crops(pil, plan_crops([im.size for im in pil], n, seed), size)


def load_eval_images(data_dir: Path) -> dict[str, np.ndarray]:
    """{"eval": ..., "calibration": ...}: the image arrays `build_eval_images` wrote."""
    data_dir = Path(data_dir)
    out = {}
    for key, name in (("eval", EVAL_FILE), ("calibration", CALIBRATION_FILE)):
        arrays = read_npz(data_dir / name)
        if "images" not in arrays:
            raise UserError(f"{data_dir / name}: no 'images' array")
        out[key] = arrays["images"]
    return out


def build_eval_images(
    out_dir: Path,
    n_eval: int = 256,
    n_calibration: int = 64,
    seed: int = 0,
    *,
    size: int = IMAGE_SIZE,
    photographs: Sequence[Path] | None = None,
) -> ImageDataManifest:
    """Write eval.npz, calibration.npz and manifest.json into `out_dir` (replaced atomically).

    photographs: defaults to `shipped_photographs()`. Each .npz holds `images` (uint8 [n, size, size, 3]),
    `sources` (file names), `boxes` (int32 [n, 4]: left, top, right, bottom) and `flips` (bool [n]).
    """
    try:
        cfg = ImageEvalData(n_eval=n_eval, n_calibration=n_calibration, seed=seed, size=size)
    except ValidationError as err:
        raise UserError(f"image evaluation data: {one_line(err)}") from None
    paths = [Path(p) for p in (shipped_photographs() if photographs is None else photographs)]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise UserError("photographs must have distinct file names (the manifest records names)")
    eval_paths, calib_paths = split_photographs(paths, cfg.n_eval, cfg.n_calibration, cfg.seed)

    sets = {}
    for key, chosen, n, stream in (("eval", eval_paths, cfg.n_eval, 1), ("calibration", calib_paths,
                                                                          cfg.n_calibration, 2)):
        pil = [read_rgb(p, photograph=True) for p in chosen]
        crops = plan_crops([im.size for im in pil], n, [cfg.seed, stream])
        sets[key] = {
            "images": render_crops(pil, crops, cfg.size),
            "sources": np.array([chosen[c.source].name for c in crops], dtype=str),
            "boxes": np.array([c.box for c in crops], dtype=np.int32).reshape(n, 4),
            "flips": np.array([c.flip for c in crops], dtype=bool),
        }

    manifest = ImageDataManifest(
        seed=cfg.seed,
        size=cfg.size,
        n_eval=cfg.n_eval,
        n_calibration=cfg.n_calibration,
        eval_sources=[p.name for p in eval_paths],
        calibration_sources=[p.name for p in calib_paths],
        sha256={key: images_sha256(arrays["images"]) for key, arrays in sets.items()},
        files=list(FILES),
        versions=image_library_versions(),
    )
    with atomic_dir(Path(out_dir)) as tmp:
        write_npz(tmp / EVAL_FILE, sets["eval"])
        write_npz(tmp / CALIBRATION_FILE, sets["calibration"])
        manifest.write(tmp / MANIFEST_FILE)
    return manifest


# -- a user's images and the model's preprocessing ------------------------------------------------------------


def center_crop(img: Image.Image, size: int = IMAGE_SIZE, crop_fraction: float | None = CROP_FRACTION) -> np.ndarray:
    """uint8 [size, size, 3]: the central square of `crop_fraction` x the shorter side, resized (bilinear).
    crop_fraction None: the whole image resized to size x size (aspect ratio not kept)."""
    from PIL import Image

    width, height = img.size
    if crop_fraction is None:
        box: tuple[float, float, float, float] = (0.0, 0.0, float(width), float(height))
    else:
        side = min(width, height) * crop_fraction
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def load_image_folder(
    root: Path,
    class_map: Mapping[str, int] | None = None,
    *,
    size: int = IMAGE_SIZE,
    crop_fraction: float | None = CROP_FRACTION,
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """A class-per-subfolder image folder (like torchvision's ImageFolder): `root/<class>/**/<image>`.

    class_map: class folder name -> label; None numbers the class folders in sorted order (as ImageFolder does).
    Returns (uint8 [n, size, size, 3] center crops, int64 labels [n], files), files sorted within each class.
    Hidden files and folders (".*") and files directly under root are ignored. Raises UserError, one line
    naming the folder or file, for: no class folder, a class folder not in class_map, a class folder
    without files, a file Pillow cannot decode.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p, root))
    if not classes:
        raise UserError(f"{root}: no class folders (expected one subfolder of images per class)")
    if class_map is None:
        class_map = {p.name: i for i, p in enumerate(classes)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    files: list[Path] = []
    for folder in classes:
        if folder.name not in class_map:
            raise UserError(f"{folder}: class folder {folder.name!r} is not in the class map "
                            f"({len(class_map)} classes)")
        label = class_map[folder.name]
        members = sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, root))
        if not members:
            raise UserError(f"{folder}: empty class folder (no image files)")
        for file in members:
            images.append(center_crop(read_rgb(file), size, crop_fraction))
            labels.append(int(label))
            files.append(file)
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


def preprocess(
    batch: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD
) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] = (x / 255 - mean) / std, C-contiguous."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a [n, H, W, 3] batch, got shape {batch.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, 3)
    s = np.asarray(std, dtype=np.float32).reshape(1, 1, 1, 3)
    x = (batch.astype(np.float32) / np.float32(255.0) - m) / s
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: each image resized whole (bilinear), or the array itself if already that size."""
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a [n, H, W, 3] batch, got shape {images.shape}")
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="RGB")
                            .resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out


# -- a user's labelled image folder as evaluation data ---------------------------------------------------------


MIN_EVAL = 32  # the validation suite's floors, and what an image folder must leave for evaluation
MIN_CALIBRATION = 8


def read_class_map(path: Path) -> dict[str, int]:
    """`classes` of an image-folder source: a JSON object, class folder name -> the model's class index."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class map not found (a JSON object mapping class folder names to class indices)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: class map is not valid JSON ({one_line(err)})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a non-empty JSON object mapping class folder names to class indices")
    for name, index in raw.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise UserError(f"{path}: class {name!r} maps to {index!r}, not a class index (an integer >= 0)")
    return {str(k): int(v) for k, v in raw.items()}


def split_folder(images: np.ndarray, n_calibration: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation, calibration) indices, each sorted: a seeded choice of about n_calibration images held out.
    Identical images (the same bytes) stay on one side, so calibration never holds an evaluation input."""
    hashes = image_hashes(images)
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    order = sorted(groups)
    held: list[int] = []
    for j in np.random.default_rng([seed, 3]).permutation(len(order)):
        if len(held) >= n_calibration:
            break
        held.extend(groups[order[int(j)]])
    calibration = np.array(sorted(held), dtype=np.int64)
    evaluation = np.array(sorted(set(range(len(images))) - set(held)), dtype=np.int64)
    return evaluation, calibration


def build_folder_images(
    out_dir: Path,
    folder: Path,
    class_map: Mapping[str, int],
    *,
    n_calibration: int = 16,
    seed: int = 0,
    size: int = IMAGE_SIZE,
    crop_fraction: float | None = CROP_FRACTION,
) -> ImageDataManifest:
    """eval.npz, calibration.npz (each: `images`, `labels`, `sources` relative to `folder`) and manifest.json
    from a class-per-subfolder folder, into `out_dir` (replaced atomically); UserError, one line, for a bad
    folder or image, or too few images to leave MIN_EVAL for evaluation."""
    folder = Path(folder)
    images, labels, files = load_image_folder(folder, class_map, size=size, crop_fraction=crop_fraction)
    need = n_calibration + MIN_EVAL
    if len(images) < need:
        raise UserError(f"{folder}: {len(images)} images; need at least {need} ({MIN_EVAL} to evaluate, "
                        f"{n_calibration} to calibrate: data.n_calibration)")
    evaluation, calibration = split_folder(images, n_calibration, seed)
    if len(evaluation) < MIN_EVAL:
        raise UserError(f"{folder}: only {len(evaluation)} distinct images left to evaluate after holding out "
                        f"{len(calibration)} for calibration (need {MIN_EVAL})")
    rel = [f.relative_to(folder).as_posix() for f in files]
    sets = {
        key: {"images": images[idx], "labels": labels[idx], "sources": np.array([rel[i] for i in idx], dtype=str)}
        for key, idx in (("eval", evaluation), ("calibration", calibration))
    }
    manifest = ImageDataManifest(
        kind="image-folder", seed=seed, size=size, n_eval=len(evaluation), n_calibration=len(calibration),
        eval_sources=[rel[i] for i in evaluation], calibration_sources=[rel[i] for i in calibration],
        sha256={key: images_sha256(arrays["images"]) for key, arrays in sets.items()},
        files=list(FILES), versions=image_library_versions(), folder=str(folder), crop_fraction=crop_fraction,
        labelled=True, n_classes=len(set(labels[evaluation].tolist())),
    )
    with atomic_dir(Path(out_dir)) as tmp:
        write_npz(tmp / EVAL_FILE, sets["eval"])
        write_npz(tmp / CALIBRATION_FILE, sets["calibration"])
        manifest.write(tmp / MANIFEST_FILE)
    return manifest


def read_manifest(data_dir: Path) -> ImageDataManifest:
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (build the evaluation data first)")
    try:
        return ImageDataManifest.model_validate_json(path.read_text())
    except ValidationError as err:
        raise UserError(f"{path}: invalid manifest ({one_line(err)})") from None


def load_labels(data_dir: Path, key: str = "eval") -> np.ndarray | None:
    """int64 class indices of the evaluation (or calibration) images; None for unlabelled data."""
    arrays = read_npz(Path(data_dir) / (EVAL_FILE if key == "eval" else CALIBRATION_FILE))
    return arrays["labels"].astype(np.int64) if "labels" in arrays else None


def data_digest(data_dir: Path) -> str:
    """sha256 over the data files' bytes, in FILES order (the files are byte-deterministic)."""
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        h.update(b"\0")
        h.update(hashlib.sha256((Path(data_dir) / name).read_bytes()).digest())
    return h.hexdigest()
