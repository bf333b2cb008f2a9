"""image-classification: images in, class logits out. Speed is batch-1 latency plus a throughput batch;
quality is agreement with the FP32 baseline's logits on the evaluation images (top-1 agreement, top-5 overlap,
softmax KL divergence) and, for labelled data (an image folder), top-1/top-5 accuracy and their retention.

Every candidate sees the same float32 NCHW pixels (`inputs.npz`), made once from the evaluation images with the
base model's preprocessing (its image size, mean and std); `logits` feeds them to any runtime and reads the
first output back as [batch, classes] logits (probabilities, from a graph ending in softmax, as their log).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.io.atomic import atomic_file
from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.metrics import retention
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import EvalDataSummary, Quality
from edgeopt.sources import SourceFacts
from edgeopt.taskspec import SourceKind
from edgeopt.validation import ValidationReport
from edgeopt.workloads.base import MlxForm, Speed, TorchForm, Workload, batch_speed
from edgeopt.workloads.image_classification import ImageFolderData, PhotographsData
from edgeopt.workloads.image_classification.base_model import DEFAULT_INPUT, is_hf_config, preprocessing_of
from edgeopt.workloads.image_classification.logits import logits, logits_all, pixel_feed, pixel_input
from edgeopt.workloads.image_classification.model import CONFIG_FILE

LOGITS_FILE = "logits.npz"  # "logits" float32 [n_eval, classes], and "labels" int64 [n_eval] for labelled data
PIXELS = {"eval": "eval_pixels", "calibration": "calibration_pixels", "bench": "bench_pixels"}
LABELS = "eval_labels"
# Relative to the baseline already: their own retention. decisive_top1_agreement: on the inputs the base
# itself classifies with top-1 probability >= 0.5 (see quality.DECISIVE_PROBABILITY).
AGREEMENT = ("decisive_top1_agreement", "top1_agreement", "top5_overlap")
ACCURACY = ("top1_accuracy", "top5_accuracy")  # labelled data only; retention = candidate / baseline
LOAD_CHECK_MAX_IMAGES = 32


def _has(inputs: Any, key: str) -> bool:
    return key in getattr(inputs, "files", inputs)  # np.load's NpzFile, or a dict


class ImageClassification(Workload):
    task = "image-classification"
    default_quality_metrics = ("decisive_top1_agreement",)
    metric_names = (*AGREEMENT, "softmax_kld", *ACCURACY)
    columns = (*col.LATENCY, *col.FOOTPRINT,
               col.Column("top-1 agr", col.measured(".4f", col.metric("top1_agreement"))),
               col.Column("decisive agr", col.measured(".4f", col.metric("decisive_top1_agreement"))),
               col.Column("top-5 ovl", col.measured(".4f", col.metric("top5_overlap"))),
               col.Column("KLD", col.measured(".4f", col.metric("softmax_kld"))),
               col.Column("top-1 acc", col.measured(".3f", col.metric("top1_accuracy"))),
               col.Column("acc ret", col.measured(".3f", col.retention("top1_accuracy"))))

    # -- checks before anything starts ----------------------------------------------------------

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """The model's form (an image classifier transformers can load; an ONNX input of the declared size,
        checked by the source itself), labels for accuracy metrics, a valid class map within the model's
        classes, and enough evaluation images for the benchmark batches."""
        from edgeopt.workloads.image_classification.base_model import check_hf_classifier, hf_num_classes
        from edgeopt.workloads.image_classification.images import read_class_map

        num_classes: int | None = None
        if source.kind == "hf" and source.path is not None:
            check_hf_classifier(source.path, source.hf_config)
            num_classes = hf_num_classes(source.hf_config or {})
            self._check_weights(source.path)
        elif source.details.get("num_classes"):
            num_classes = int(source.details["num_classes"])

        data = cfg.data.with_paths_under(project_root)
        if isinstance(data, ImageFolderData):
            classes = read_class_map(data.classes)
            if num_classes is not None:
                for name, index in classes.items():
                    if index >= num_classes:
                        raise UserError(f"data.classes: class {name!r} maps to {index}, but the model has "
                                        f"{num_classes} classes (0..{num_classes - 1})")
        else:
            wanted = [m for m in cfg.selection.quality_metrics if m in ACCURACY]
            if wanted:
                raise UserError(f"selection.quality_metrics: {wanted[0]} needs labelled images (data.kind "
                                f"image-folder); the {data.kind} data has no labels")
        need = max(cfg.benchmark.batch_size, cfg.benchmark.throughput_batch_size)
        if isinstance(data, PhotographsData) and data.n_eval < need:
            raise UserError(f"data.n_eval: {data.n_eval} evaluation images are fewer than the benchmark batch "
                            f"({need}); raise n_eval or lower benchmark.throughput_batch_size")

    @staticmethod
    def _check_weights(folder: Path) -> None:
        """A Hugging Face folder's weights must fill its architecture (transformers would initialise the rest
        at random, with only a warning)."""
        from edgeopt.workloads.image_classification.base_model import torch_module

        try:
            torch_module(folder)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"model: cannot load {folder} with AutoModelForImageClassification: "
                            f"{' '.join(str(err).split())[:200]}") from None

    # -- the base model and the data ------------------------------------------------------------

    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        from edgeopt.workloads.image_classification.base_model import materialize

        return materialize(source, dest, self.task, project_root)

    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """Images at the base model's size (224 in preflight, where only an image folder is built, to check it)."""
        from edgeopt.workloads.image_classification.images import (
            FILES,
            IMAGE_SIZE,
            build_eval_images,
            build_folder_images,
            data_digest,
            read_class_map,
        )

        size = preprocessing_of(base.path).image_size if base is not None else IMAGE_SIZE
        if isinstance(source, PhotographsData):
            from importlib.metadata import version

            manifest = build_eval_images(out_dir, source.n_eval, source.n_calibration, source.seed, size=size)
            origin = f"scikit-image {version('scikit-image')} photographs"
        elif isinstance(source, ImageFolderData):
            manifest = build_folder_images(out_dir, source.path, read_class_map(source.classes),
                                           n_calibration=source.n_calibration, seed=source.seed, size=size,
                                           crop_fraction=source.crop_fraction)
            origin = str(source.path)
        else:
            raise UserError(f"data.kind {source.kind!r} does not fit task {self.task}")
        return EvalDataSummary(kind=source.kind, source=origin, seed=manifest.seed, n_pairs=0,
                               n_sentences=manifest.n_eval, n_calibration=manifest.n_calibration,
                               files=list(FILES), sha256=data_digest(out_dir))

    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        from edgeopt.workloads.image_classification.validation import validate_image_data

        return validate_image_data(data_dir, report_path)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        """One row per evaluation image: its source file, crop box or label, and the sha256 of its pixels."""
        from edgeopt.workloads.image_classification.images import EVAL_FILE, image_hashes, read_npz

        arrays = read_npz(Path(data_dir) / EVAL_FILE)
        rows: list[dict[str, Any]] = []
        for i, digest in enumerate(image_hashes(arrays["images"])):
            row: dict[str, Any] = {"index": i, "source": str(arrays["sources"][i]), "sha256": digest}
            if "labels" in arrays:
                row["label"] = int(arrays["labels"][i])
            if "boxes" in arrays:
                row["box"] = ",".join(str(int(v)) for v in arrays["boxes"][i])
                row["flip"] = bool(arrays["flips"][i])
            rows.append(row)
        return rows

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_items} evaluation images"

    # -- inputs and calibration -------------------------------------------------------------------

    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """float32 NCHW pixels of the evaluation, calibration and benchmark images, made with the base model's
        preprocessing (resized to its image size, (x / 255 - mean) / std); the labels of labelled data."""
        from edgeopt.workloads.image_classification.images import (
            load_eval_images,
            load_labels,
            preprocess,
            resize_images,
        )

        pre = preprocessing_of(base.path)
        images = load_eval_images(data_dir)
        need = max(bench.batch_size, bench.throughput_batch_size)
        if len(images["eval"]) < need:
            raise UserError(f"{len(images['eval'])} evaluation images are fewer than the benchmark batch ({need})")
        arrays = {PIXELS[key]: preprocess(resize_images(images[key], pre.image_size), pre.mean, pre.std)
                  for key in ("eval", "calibration")}
        arrays[PIXELS["bench"]] = arrays[PIXELS["eval"]][:need].copy()
        labels = load_labels(data_dir)
        if labels is not None:
            if pre.num_classes is not None and len(labels) and int(labels.max()) >= pre.num_classes:
                raise UserError(f"class index {int(labels.max())} in the evaluation labels, but the model has "
                                f"{pre.num_classes} classes")
            arrays[LABELS] = labels
        return arrays

    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """One calibration image per feed (leading axis 1) under the model's input name, in its layout and
        dtype; the image size is fixed, so own_length changes nothing."""
        x = np.asarray(inputs[PIXELS["calibration"]], dtype=np.float32)
        if spec is None:
            return [{DEFAULT_INPUT: x[i : i + 1]} for i in range(len(x))]
        t = pixel_input(spec)
        feeds = [pixel_feed(spec, x[i : i + 1]) for i in range(len(x))]
        problem = spec.feed_problem(feeds[0]) if feeds else None
        if problem:
            raise CandidateError(f"calibration images do not fit the model's input {t.name}: {problem}")
        return feeds

    def torch_form(self, model_dir: Path, for_export: bool = False) -> TorchForm:
        """pixel_values float32 [batch, 3, H, W] -> logits float32 [batch, classes] (the bundled form's or a
        Hugging Face classifier's), with a dynamic batch axis; the example is one image."""
        from edgeopt.workloads.image_classification.base_model import torch_module

        try:
            module, name, size, classes = torch_module(Path(model_dir), for_export)
        except CandidateError:
            raise
        except Exception as err:  # UserError from the folder checks, or whatever transformers raises
            raise CandidateError(f"cannot build the PyTorch form of {model_dir}: {' '.join(str(err).split())[:300]}") \
                from err
        spec = IOSpec(inputs=(TensorSpec(name, "float32", ("batch", 3, size, size)),),
                      outputs=(TensorSpec("logits", "float32", ("batch", classes)),))
        example = np.random.default_rng(0).uniform(-1.0, 1.0, (1, 3, size, size)).astype(np.float32)
        return TorchForm(module=module, io_spec=spec, example={name: example})

    def mlx_form(self, model_dir: Path, weights: bool = True) -> MlxForm:
        """The bundled EfficientNet-Lite0 ported to mlx.nn (BatchNorm folded into the convolutions): the torch
        form's pixel_values -> logits. A Hugging Face classifier has no MLX port and is refused with the reason."""
        model_dir = Path(model_dir)
        try:
            config = json.loads((model_dir / CONFIG_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CandidateError(f"no MLX form for {model_dir}: cannot read {CONFIG_FILE} ({err})") from None
        if isinstance(config, dict) and is_hf_config(config):
            name = ", ".join(config.get("architectures") or [str(config["model_type"])])
            raise CandidateError(f"no MLX form for {name}: the MLX port covers the bundled EfficientNet-Lite0 only")
        from edgeopt.workloads.image_classification.mlx_model import mlx_module

        module, spec = mlx_module(model_dir, weights)
        return MlxForm(module=module, io_spec=spec)

    # -- measurement (child process) and quality (parent) ------------------------------------------

    def batch_call(self, runner: Any, inputs: Any, n: int) -> Callable[[], object]:
        x = np.asarray(inputs[PIXELS["bench"]])
        return lambda: logits(runner, x[:n])

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        return batch_speed(lambda n: self.batch_call(runner, inputs, n), bench)

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        arrays: dict[str, Any] = {"logits": logits_all(runner, np.asarray(inputs[PIXELS["eval"]]),
                                                       bench.quality_batch_size)}
        if _has(inputs, LABELS):
            arrays["labels"] = np.asarray(inputs[LABELS], dtype=np.int64)
        with atomic_file(Path(out_dir) / LOGITS_FILE) as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """Agreement with the baseline (its own retention); KLD (metrics only: lower is better, gate it with
        gates.max_metrics); with labels, top-1/top-5 accuracy and retention = candidate / baseline. Each with a
        bootstrap CI over the images (`ci`, `retention_ci`: accuracy retention paired per image)."""
        from edgeopt.workloads.image_classification.quality import compare_logits, quality_intervals, topk_accuracy

        with np.load(Path(candidate_dir) / LOGITS_FILE) as c, np.load(Path(baseline_dir) / LOGITS_FILE) as b:
            cand, base = c["logits"], b["logits"]
            labels = b["labels"] if "labels" in b.files else None
        try:
            scores = compare_logits(base, cand)
            metrics = {k: scores[k] for k in (*AGREEMENT, "softmax_kld")}
            ret = {k: scores[k] for k in AGREEMENT}
            if labels is not None:
                k5 = min(5, base.shape[1])
                acc = {"top1_accuracy": topk_accuracy(cand, labels, 1),
                       "top5_accuracy": topk_accuracy(cand, labels, k5)}
                base_acc = {"top1_accuracy": topk_accuracy(base, labels, 1),
                            "top5_accuracy": topk_accuracy(base, labels, k5)}
                metrics.update(acc)
                ret.update(retention(acc, base_acc))
            # Bootstrap CIs over the evaluation images (every metric is a mean over them).
            ci, ret_ci = quality_intervals(base, cand, labels, metrics, ret, AGREEMENT)
        except ValueError as err:  # e.g. a candidate with another number of classes than the baseline
            raise CandidateError(f"cannot compare logits with the baseline's: {err}") from None
        return Quality(metrics=metrics, retention=ret, ci=ci, retention_ci=ret_ci)

    # -- serving ----------------------------------------------------------------------------------

    def python_model(self) -> Path:
        return Path(__file__).with_name("serving_code.py")

    def serving_artifacts(self, base: BaseModelInfo) -> dict[str, Path]:
        return {}

    def serving_config(self, cfg: PipelineConfig, base: BaseModelInfo) -> dict[str, Any]:
        """The measured preprocessing (image size, mean, std; the center crop of image files), batch and threads."""
        from edgeopt.workloads.image_classification.images import CROP_FRACTION

        pre = preprocessing_of(base.path)
        crop = cfg.data.crop_fraction if isinstance(cfg.data, ImageFolderData) else CROP_FRACTION
        return {"image_size": pre.image_size, "mean": list(pre.mean), "std": list(pre.std), "crop_fraction": crop,
                "batch_size": cfg.benchmark.quality_batch_size, "threads": cfg.benchmark.threads}

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model's top-1 class on the first evaluation images must be the measured logits' argmax.

        The probe is the first measured quality batch exactly (the served batch size is the measured one), so
        a runtime whose numbers depend on the batch (dynamic quantization's per-call scales) sees that batch.
        """
        from edgeopt.workloads.image_classification.images import load_eval_images

        served = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
        n = min(int(getattr(served, "batch_size", 8)), LOAD_CHECK_MAX_IMAGES)
        probe = load_eval_images(data_dir)["eval"][:n]
        with np.load(Path(measurement_dir) / LOGITS_FILE) as saved:
            expected = saved["logits"][: len(probe)].argmax(axis=1)
        got = model.predict(list(probe))
        classes = np.asarray(got["class_index"], dtype=np.int64)
        if classes.shape != expected.shape:
            return False, f"{classes.shape[0] if classes.ndim else 0} predictions for {len(probe)} images"
        same = int((classes == expected).sum())
        return same == len(probe), f"top-1 of {same}/{len(probe)} evaluation images equals the measured argmax"


WORKLOAD = ImageClassification()
