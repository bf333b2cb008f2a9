"""Images for object-detection, offline: evaluation and calibration sets, letterboxed to the model's input.

Two sources, one layout. `build_photograph_images`: the photographs the installed scikit-image wheel ships,
split by scene into evaluation and calibration photographs (`edgeopt.imaging.split_photographs`), each set made
of its photographs whole and then seeded random crops with flips (`plan_crops`) up to the count asked for. The
crops are cut at the photograph's own resolution; only letterboxing resizes. `build_coco_images`: a user's image
folder and COCO instances json, a seeded choice of images held out for calibration, the reference boxes of the
others kept in original pixels.

Each of `eval.npz` / `calibration.npz` holds `images` (uint8 [n, size, size, 3], letterboxed), `frames` (float64
[n, 5]: scale, left, top, width, height of each original in its letterbox) and `sources`; a labelled `eval.npz`
also holds the reference boxes: `gt_image` (int64 [m], the image index), `gt_boxes` (float32 [m, 4], xyxy in the
original's pixels) and `gt_classes` (int64 [m]). `manifest.json` says what was written and from what. The files
are byte-deterministic for a seed (`write_npz`) and written atomically, into one folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import UserError
from edgeopt.imaging import (
    PHOTO_SUFFIXES,
    image_library_versions,
    images_sha256,
    plan_crops,
    read_npz,
    read_rgb,
    shipped_photographs,
    split_photographs,
    write_npz,
)
from edgeopt.io.atomic import atomic_dir
from edgeopt.results import Record
from edgeopt.workloads.object_detection.boxes import Detections, Frame, letterbox
from edgeopt.workloads.object_detection.coco import Instances, read_instances

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_SIZE = 640  # preflight, before the model's own size is known
EVAL_FILE = "eval.npz"
CALIBRATION_FILE = "calibration.npz"
MANIFEST_FILE = "manifest.json"
FILES = (EVAL_FILE, CALIBRATION_FILE, MANIFEST_FILE)
IMAGE_SUFFIXES = (*PHOTO_SUFFIXES, ".bmp", ".webp", ".tif", ".tiff")
MIN_EVAL = 4  # the validation suite's floors
MIN_CALIBRATION = 1


class DetectionDataManifest(Record):
    """`manifest.json`: what the data build wrote and from what."""

    kind: str
    seed: int
    size: int
    n_eval: int
    n_calibration: int
    eval_sources: list[str]
    calibration_sources: list[str]  # disjoint from eval_sources
    sha256: dict[str, str]  # "eval" / "calibration": sha256 of the letterboxed uint8 images
    files: list[str]
    versions: dict[str, str]
    # The data source's: the base's detections at or above it are the pseudo-labels; detections_per_image counts them.
    score_threshold: float
    labelled: bool = False
    n_boxes: int = 0  # reference boxes over the evaluation images (labelled data)
    folder: str | None = None
    annotations: str | None = None


def _frames(frames: Sequence[Frame]) -> np.ndarray:
    return np.array([[f.scale, f.left, f.top, f.width, f.height] for f in frames], dtype=np.float64).reshape(-1, 5)


def frames_of(array: np.ndarray) -> list[Frame]:
    """The `frames` array of an .npz as Frame tuples."""
    return [Frame(float(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in np.asarray(array)]


def _letterboxed(images: Sequence[Image.Image], size: int) -> tuple[np.ndarray, np.ndarray]:
    boxed = [letterbox(img, size) for img in images]
    pixels = np.stack([b[0] for b in boxed]) if boxed else np.zeros((0, size, size, 3), np.uint8)
    return pixels, _frames([b[1] for b in boxed])


def _views(photos: Sequence[Image.Image], names: Sequence[str], n: int,
           seed: Sequence[int]) -> tuple[list[Image.Image], list[str]]:
    """n views of the photographs: each whole (in order), then seeded random crops and flips; and where each is
    from ("name", or "name@left,top,right,bottom[:flip]")."""
    from PIL import Image

    views, sources = list(photos[:n]), list(names[:n])
    for crop in plan_crops([p.size for p in photos], n - len(views), seed) if n > len(views) else []:
        view = photos[crop.source].crop(crop.box)
        views.append(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if crop.flip else view)
        sources.append(f"{names[crop.source]}@{','.join(str(v) for v in crop.box)}{':flip' if crop.flip else ''}")
    return views, sources


def build_photograph_images(out_dir: Path, n_eval: int, n_calibration: int, seed: int, size: int, *,
                            score_threshold: float = 0.25,
                            photographs: Sequence[Path] | None = None) -> DetectionDataManifest:
    """eval.npz, calibration.npz and manifest.json from the shipped photographs (or `photographs`)."""
    paths = [Path(p) for p in (shipped_photographs() if photographs is None else photographs)]
    eval_paths, calib_paths = split_photographs(paths, n_eval, n_calibration, seed)
    sets: dict[str, dict[str, np.ndarray]] = {}
    for key, chosen, n, stream in (("eval", eval_paths, n_eval, 1), ("calibration", calib_paths, n_calibration, 2)):
        photos = [read_rgb(p, photograph=True) for p in chosen]
        views, sources = _views(photos, [p.name for p in chosen], n, [seed, stream])
        images, frames = _letterboxed(views, size)
        sets[key] = {"images": images, "frames": frames, "sources": np.array(sources, dtype=str)}
    manifest = DetectionDataManifest(
        kind="skimage-photographs", seed=seed, size=size, n_eval=n_eval, n_calibration=n_calibration,
        eval_sources=[p.name for p in eval_paths], calibration_sources=[p.name for p in calib_paths],
        sha256={k: images_sha256(v["images"]) for k, v in sets.items()}, files=list(FILES),
        versions=image_library_versions(), score_threshold=score_threshold)
    _write(out_dir, sets, manifest)
    return manifest


def folder_images(folder: Path) -> list[Path]:
    """The image files under `folder` (hidden ones left out), sorted; UserError if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def read_coco(folder: Path, annotations: Path, class_names: Sequence[str] | None,
              n_classes: int | None) -> Instances:
    """The folder's COCO instances, checked (the folder holds images, the json parses and names only them)."""
    folder_images(folder)
    return read_instances(annotations, folder, class_names, n_classes)


def build_coco_images(out_dir: Path, folder: Path, annotations: Path, *, n_calibration: int, seed: int, size: int,
                      class_names: Sequence[str] | None, n_classes: int | None,
                      score_threshold: float = 0.25) -> DetectionDataManifest:
    """eval.npz (with the reference boxes), calibration.npz and manifest.json from a COCO folder."""
    folder, annotations = Path(folder), Path(annotations)
    instances = read_coco(folder, annotations, class_names, n_classes)
    n = len(instances.files)
    if n < n_calibration + MIN_EVAL:
        raise UserError(f"{annotations}: {n} images; need at least {n_calibration + MIN_EVAL} ({MIN_EVAL} to "
                        f"evaluate, {n_calibration} to calibrate: data.n_calibration)")
    held = set(np.random.default_rng([seed, 4]).permutation(n)[:n_calibration].tolist())
    split = {"eval": [i for i in range(n) if i not in held], "calibration": sorted(held)}
    sets: dict[str, dict[str, np.ndarray]] = {}
    for key, idx in split.items():
        images, frames = _letterboxed([read_rgb(folder / instances.files[i]) for i in idx], size)
        sets[key] = {"images": images, "frames": frames,
                     "sources": np.array([instances.files[i] for i in idx], dtype=str)}
    ref = [instances.boxes[i] for i in split["eval"]]
    sets["eval"].update(reference_arrays(ref))
    manifest = DetectionDataManifest(
        kind="coco", seed=seed, size=size, n_eval=len(split["eval"]), n_calibration=len(split["calibration"]),
        eval_sources=[instances.files[i] for i in split["eval"]],
        calibration_sources=[instances.files[i] for i in split["calibration"]],
        sha256={k: images_sha256(v["images"]) for k, v in sets.items()}, files=list(FILES),
        versions=image_library_versions(), score_threshold=score_threshold, labelled=True,
        n_boxes=sum(len(d) for d in ref), folder=str(folder),
        annotations=str(annotations))
    _write(out_dir, sets, manifest)
    return manifest


def reference_arrays(boxes: Sequence[Detections]) -> dict[str, np.ndarray]:
    """Per-image reference boxes as flat arrays: gt_image, gt_boxes, gt_classes."""
    return {"gt_image": np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(boxes)] or
                                       [np.zeros(0, np.int64)]),
            "gt_boxes": np.concatenate([d.boxes for d in boxes] or [np.zeros((0, 4), np.float32)]).astype(np.float32),
            "gt_classes": np.concatenate([d.classes for d in boxes] or [np.zeros(0, np.int64)]).astype(np.int64)}


def reference_boxes(arrays: dict[str, np.ndarray] | Any, n_images: int) -> list[Detections] | None:
    """The per-image reference boxes of flat gt_* arrays; None where there are none (unlabelled data)."""
    if "gt_image" not in arrays:
        return None
    image, boxes, classes = (np.asarray(arrays[k]) for k in ("gt_image", "gt_boxes", "gt_classes"))
    return [Detections(boxes[image == i].astype(np.float32), np.ones(int((image == i).sum()), np.float32),
                       classes[image == i].astype(np.int64)) for i in range(n_images)]


def _write(out_dir: Path, sets: dict[str, dict[str, np.ndarray]], manifest: DetectionDataManifest) -> None:
    with atomic_dir(Path(out_dir)) as tmp:
        write_npz(tmp / EVAL_FILE, sets["eval"])
        write_npz(tmp / CALIBRATION_FILE, sets["calibration"])
        manifest.write(tmp / MANIFEST_FILE)


def load_sets(data_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{"eval": ..., "calibration": ...}: the arrays of the two .npz files."""
    out = {}
    for key, name in (("eval", EVAL_FILE), ("calibration", CALIBRATION_FILE)):
        arrays = read_npz(Path(data_dir) / name)
        missing = [k for k in ("images", "frames") if k not in arrays]
        if missing:
            raise UserError(f"{Path(data_dir) / name}: no {' / '.join(missing)} array")
        out[key] = arrays
    return out


def read_manifest(data_dir: Path) -> DetectionDataManifest:
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (build the evaluation data first)")
    return DetectionDataManifest.model_validate_json(path.read_text())


def data_digest(data_dir: Path) -> str:
    """sha256 over the data files' bytes, in FILES order."""
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode() + b"\0" + hashlib.sha256((Path(data_dir) / name).read_bytes()).digest())
    return h.hexdigest()
