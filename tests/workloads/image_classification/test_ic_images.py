"""Offline evaluation images from scikit-image's shipped photographs, a user's image folder, preprocessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import UserError
from edgeopt.workloads.image_classification.images import (
    CALIBRATION_FILE,
    EVAL_FILE,
    MANIFEST_FILE,
    build_eval_images,
    expand,
    image_hashes,
    images_sha256,
    load_image_folder,
    photo_group,
    plan_crops,
    preprocess,
    read_npz,
    read_rgb,
    shipped_photographs,
    skimage_data_dir,
)

PHOTO = skimage_data_dir()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("images")
    build_eval_images(root / "a", seed=0)
    build_eval_images(root / "b", seed=0)
    build_eval_images(root / "c", n_eval=32, n_calibration=8, seed=1)
    return root / "a", root / "b", root / "c"


def test_shipped_photographs_are_decodable_files_of_the_wheel() -> None:
    photos = shipped_photographs()
    names = [p.name for p in photos]
    assert len(photos) >= 20  # 26 with scikit-image 0.26.0
    assert {"chelsea.png", "coffee.png", "motorcycle_left.png", "horse.png", "camera.png"} <= set(names)
    assert all(p.parent == PHOTO and p.suffix in (".png", ".jpg") for p in photos)
    assert names == sorted(names)


def test_grayscale_and_rgba_become_rgb() -> None:
    camera = read_rgb(PHOTO / "camera.png")  # L
    horse = read_rgb(PHOTO / "horse.png")  # RGBA, alpha composited over white
    assert camera.mode == horse.mode == "RGB"
    arr = np.asarray(camera)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_expand_is_deterministic_in_its_seed() -> None:
    photos = [np.asarray(read_rgb(PHOTO / n)) for n in ("chelsea.png", "coffee.png", "text.png")]
    a = expand(photos, 12, seed=7)
    assert a.shape == (12, 224, 224, 3) and a.dtype == np.uint8
    assert a.tobytes() == expand(photos, 12, seed=7).tobytes()
    assert a.tobytes() != expand(photos, 12, seed=8).tobytes()
    assert expand(photos, 4, seed=7, size=96).shape == (4, 96, 96, 3)


def test_crops_cover_half_to_all_of_the_photograph_and_flip_both_ways() -> None:
    sizes = [(451, 300), (448, 172), (102, 102), (300, 900)]
    crops = plan_crops(sizes, 400, seed=0)
    for start in range(0, 400, 4):  # every photograph once per round, in a fresh order
        assert sorted(c.source for c in crops[start:start + 4]) == [0, 1, 2, 3]
    for c in crops:
        width, height = sizes[c.source]
        left, top, right, bottom = c.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert 0.49 <= (right - left) * (bottom - top) / (width * height) <= 1.0
    assert {c.flip for c in crops} == {True, False}


def test_build_eval_images_is_deterministic(built: tuple[Path, Path, Path]) -> None:
    a, b, _ = built
    ma, mb, mc = (json.loads((d / MANIFEST_FILE).read_text()) for d in built)
    assert ma == mb
    for name in (EVAL_FILE, CALIBRATION_FILE, MANIFEST_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()  # byte-identical files, not only arrays
    assert ma["sha256"] != mc["sha256"]
    assert (ma["n_eval"], ma["n_calibration"], ma["seed"]) == (256, 64, 0)
    for key, name in (("eval", EVAL_FILE), ("calibration", CALIBRATION_FILE)):
        arrays = read_npz(a / name)
        n = ma[f"n_{key}"]
        assert arrays["images"].shape == (n, 224, 224, 3) and arrays["images"].dtype == np.uint8
        assert arrays["boxes"].shape == (n, 4) and arrays["flips"].shape == (n,) and arrays["sources"].shape == (n,)
        assert images_sha256(arrays["images"]) == ma["sha256"][key]
        assert set(arrays["sources"].tolist()) == set(ma[f"{key}_sources"])  # every held photograph is used


def test_calibration_comes_from_other_photographs_than_evaluation(built: tuple[Path, Path, Path]) -> None:
    for folder in built:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        evaluation, calibration = set(manifest["eval_sources"]), set(manifest["calibration_sources"])
        assert evaluation and calibration and not evaluation & calibration
        assert not {photo_group(Path(n)) for n in evaluation} & {photo_group(Path(n)) for n in calibration}
        assert evaluation | calibration == {p.name for p in shipped_photographs()}
        eval_images = read_npz(folder / EVAL_FILE)["images"]
        calib_images = read_npz(folder / CALIBRATION_FILE)["images"]
        assert not set(image_hashes(eval_images)) & set(image_hashes(calib_images))


def _folder(tmp_path: Path, layout: dict[str, list[str]]) -> Path:
    root = tmp_path / "images"
    for cls, names in layout.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(PHOTO / name, root / cls / name)
    return root


def test_load_image_folder_reads_classes_and_labels(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"espresso": ["coffee.png"], "cat": ["chelsea.png", "horse.png"]})
    (root / "notes.txt").write_text("files beside the class folders are ignored")
    (root / "cat" / ".DS_Store").write_bytes(b"\0hidden")
    images, labels, files = load_image_folder(root, {"cat": 285, "espresso": 967, "unused": 1})
    assert images.shape == (3, 224, 224, 3) and images.dtype == np.uint8
    assert labels.tolist() == [285, 285, 967]
    assert [f.name for f in files] == ["chelsea.png", "horse.png", "coffee.png"]
    _, default_labels, _ = load_image_folder(root)  # sorted class folders: cat 0, espresso 1
    assert default_labels.tolist() == [0, 0, 1]


def _one_line_error(root: Path, class_map: dict[str, int] | None = None) -> str:
    with pytest.raises(UserError) as err:
        load_image_folder(root, class_map)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_image_folder_problems_are_one_line_user_errors(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"cat": ["chelsea.png"]})
    (root / "dog").mkdir()
    message = _one_line_error(root)
    assert "dog" in message and "empty class folder" in message
    (root / "dog").rmdir()

    assert "'cat' is not in the class map" in _one_line_error(root, {"espresso": 967})

    (root / "cat" / "fake.jpg").write_text("this is not a JPEG")
    message = _one_line_error(root)
    assert "fake.jpg" in message and "not an image" in message
    (root / "cat" / "fake.jpg").unlink()

    data = (PHOTO / "coffee.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(data[: len(data) // 2])
    assert "truncated.png" in _one_line_error(root)

    empty = tmp_path / "nothing"
    empty.mkdir()
    assert "no class folders" in _one_line_error(empty)
    assert "not found" in _one_line_error(tmp_path / "missing")


def test_preprocess_scales_to_minus_one_one_in_nchw() -> None:
    batch = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    batch[..., 0], batch[..., 1], batch[..., 2] = 0, 255, 51
    x = preprocess(batch, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 0], -1.0)
    np.testing.assert_allclose(x[:, 1], 1.0)
    np.testing.assert_allclose(x[:, 2], (51 / 255 - 0.5) / 0.5, rtol=1e-6)
    y = preprocess(batch, (0.0, 0.1, 0.2), (1.0, 2.0, 4.0))
    np.testing.assert_allclose(y[:, 2], (51 / 255 - 0.2) / 4.0, rtol=1e-6)
    with pytest.raises(ValueError):
        preprocess(batch[0])
