"""object-detection: letterboxed images in, a YOLO head's raw output out; boxes and COCO mAP made in the workload.

Every candidate sees the same uint8 letterboxed images (`inputs.npz`, fed as float 0..1 NCHW); speed is the
runtime's batch-1 latency and a throughput batch on the raw head output (decoding and NMS are the same numpy for
every runtime, so they are not timed). Quality: every candidate's detections (score >= 0.001, per-class NMS at IoU
0.7, at most 300 per image, in original pixels) scored with pycocotools against the labels or the FP32 base's
confident detections (see `quality`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt import columns as col
from edgeopt.config import BenchmarkConfig, PipelineConfig
from edgeopt.errors import CandidateError, UserError
from edgeopt.iospec import Feed, IOSpec
from edgeopt.recipes import BaseModelInfo
from edgeopt.results import EvalDataSummary, Quality
from edgeopt.sources import SourceFacts
from edgeopt.taskspec import SourceKind
from edgeopt.validation import ValidationReport
from edgeopt.workloads.base import Speed, Workload, batch_speed
from edgeopt.workloads.object_detection import CocoData, OnnxDetectorModel, PhotographsData
from edgeopt.workloads.object_detection.boxes import SCORE_THRESHOLD, to_pixels
from edgeopt.workloads.object_detection.detector import detections, pixel_feed, pixel_input, raw_output
from edgeopt.workloads.object_detection.model import DetectorConfig, head_float_nodes, read_config

if TYPE_CHECKING:
    import onnx

IMAGES = {"eval": "eval_images", "calibration": "calibration_images", "bench": "bench_images"}
FRAMES = "eval_frames"
THRESHOLD = "score_threshold"
SERVING_SCORE = 0.25  # the served model's default confidence (Ultralytics' predict default)
LOAD_CHECK_MAX_IMAGES = 8
DEFAULT_INPUT = "images"  # the Ultralytics export's input name: the task's own, where no model is given


class ObjectDetection(Workload):
    task = "object-detection"
    default_quality_metrics = ("map",)
    metric_names = ("map", "map50", "detections_per_image")
    columns = (*col.LATENCY, *col.FOOTPRINT,
               col.Column("mAP", col.measured(".4f", col.metric("map"))),
               col.Column("mAP50", col.measured(".4f", col.metric("map50"))),
               col.Column("det/img", col.measured(".2f", col.metric("detections_per_image"))),
               col.Column("mAP ret", col.measured(".3f", col.retention("map"))))

    # -- checks before anything starts ----------------------------------------------------------

    def preflight(self, cfg: PipelineConfig, source: SourceFacts, project_root: Path) -> None:
        """COCO data against the model (the folder holds images, the json parses, names only images in the
        folder and categories the model has), and enough evaluation images for the benchmark batches."""
        from edgeopt.workloads.object_detection.images import read_coco

        model = DetectorConfig.model_validate(source.details) if source.details else None
        data = cfg.data.with_paths_under(project_root)
        need = max(cfg.benchmark.batch_size, cfg.benchmark.throughput_batch_size)
        if isinstance(data, CocoData):
            instances = read_coco(data.images, data.annotations, model.class_names if model else None,
                                  model.num_classes if model else None)
            if len(instances.files) - data.n_calibration < need:
                raise UserError(f"data.annotations: {len(instances.files)} images leave fewer than the benchmark "
                                f"batch ({need}) to evaluate after {data.n_calibration} for calibration")
        elif isinstance(data, PhotographsData) and data.n_eval < need:
            raise UserError(f"data.n_eval: {data.n_eval} evaluation images are fewer than the benchmark batch "
                            f"({need}); raise n_eval or lower benchmark.throughput_batch_size")

    # -- the base model and the data ------------------------------------------------------------

    def materialize_base(self, source: SourceKind, dest: Path, project_root: Path) -> BaseModelInfo:
        from edgeopt.workloads.object_detection.model import materialize

        if not isinstance(source, OnnxDetectorModel):
            raise UserError(f"model.kind {source.kind!r} does not fit task {self.task}")
        return materialize(source, dest, self.task, project_root)

    def build_data(self, source: SourceKind, out_dir: Path, base: BaseModelInfo | None) -> EvalDataSummary:
        """Images letterboxed to the base model's input (DEFAULT_SIZE in preflight, where the model is not read)."""
        from importlib.metadata import version

        from edgeopt.workloads.object_detection.images import (
            DEFAULT_SIZE,
            FILES,
            build_coco_images,
            build_photograph_images,
            data_digest,
        )

        cfg = read_config(base.path) if base is not None else None
        size = cfg.input_size if cfg is not None else DEFAULT_SIZE
        if isinstance(source, PhotographsData):
            manifest = build_photograph_images(out_dir, source.n_eval, source.n_calibration, source.seed, size,
                                               score_threshold=source.score_threshold)
            origin = f"scikit-image {version('scikit-image')} photographs"
        elif isinstance(source, CocoData):
            manifest = build_coco_images(out_dir, source.images, source.annotations, n_calibration=source.n_calibration,
                                         seed=source.seed, size=size, class_names=cfg.class_names if cfg else None,
                                         n_classes=cfg.num_classes if cfg else None,
                                         score_threshold=source.score_threshold)
            origin = str(source.annotations)
        else:
            raise UserError(f"data.kind {source.kind!r} does not fit task {self.task}")
        return EvalDataSummary(kind=source.kind, source=origin, seed=manifest.seed, n_pairs=0,
                               n_sentences=manifest.n_eval, n_calibration=manifest.n_calibration,
                               files=list(FILES), sha256=data_digest(out_dir))

    def validate_data(self, data_dir: Path, report_path: Path | None) -> ValidationReport:
        from edgeopt.workloads.object_detection.validation import validate_detection_data

        return validate_detection_data(data_dir, report_path)

    def dataset_rows(self, data_dir: Path) -> list[dict[str, Any]]:
        """One row per evaluation image: where it is from, its original size, its reference boxes, its sha256."""
        from edgeopt.imaging import image_hashes
        from edgeopt.workloads.object_detection.images import load_sets

        arrays = load_sets(data_dir)["eval"]
        boxes = np.bincount(arrays["gt_image"], minlength=len(arrays["images"])) if "gt_image" in arrays else None
        return [{"index": i, "source": str(arrays["sources"][i]), "width": int(arrays["frames"][i][3]),
                 "height": int(arrays["frames"][i][4]), "sha256": digest,
                 **({"boxes": int(boxes[i])} if boxes is not None else {})}
                for i, digest in enumerate(image_hashes(arrays["images"]))]

    def describe_data(self, n_pairs: int, n_items: int) -> str:
        return f"{n_items} evaluation images"

    # -- inputs and calibration -------------------------------------------------------------------

    def prepare_inputs(self, base: BaseModelInfo, data_dir: Path, bench: BenchmarkConfig) -> dict[str, np.ndarray]:
        """The letterboxed uint8 images (evaluation, calibration, benchmark), the evaluation frames, the labels'
        arrays, and the score threshold the data source declares (pseudo-labels, detections per image)."""
        from edgeopt.workloads.object_detection.images import load_sets, read_manifest

        cfg = read_config(base.path)
        sets = load_sets(data_dir)
        size = read_manifest(data_dir).size
        if size != cfg.input_size:
            raise UserError(f"{data_dir}: images are letterboxed to {size}, the model takes {cfg.input_size}")
        need = max(bench.batch_size, bench.throughput_batch_size)
        if len(sets["eval"]["images"]) < need:
            raise UserError(f"{len(sets['eval']['images'])} evaluation images are fewer than the benchmark batch "
                            f"({need})")
        arrays = {IMAGES["eval"]: sets["eval"]["images"], IMAGES["calibration"]: sets["calibration"]["images"],
                  IMAGES["bench"]: sets["eval"]["images"][:need].copy(), FRAMES: sets["eval"]["frames"],
                  THRESHOLD: np.float64(read_manifest(data_dir).score_threshold)}
        arrays.update({k: v for k, v in sets["eval"].items() if k.startswith("gt_")})
        return arrays

    def calibration(self, inputs: Any, spec: IOSpec | None, own_length: bool = False) -> list[Feed]:
        """One calibration image per feed (leading axis 1) as float 0..1 NCHW under the model's input name."""
        x = np.asarray(inputs[IMAGES["calibration"]])
        if spec is None:
            return [{DEFAULT_INPUT: to_pixels(x[i : i + 1])} for i in range(len(x))]
        feeds = [pixel_feed(spec, x[i : i + 1]) for i in range(len(x))]
        problem = spec.feed_problem(feeds[0]) if feeds else None
        if problem:
            raise CandidateError(f"calibration images do not fit the model's input {pixel_input(spec).name}: "
                                 f"{problem}")
        return feeds

    def float_nodes(self, model: onnx.ModelProto) -> list[str]:
        """The YOLO head's post-processing nodes (see `model.head_float_nodes`)."""
        return head_float_nodes(model)

    # -- measurement (child process) and quality (parent) ------------------------------------------

    def batch_call(self, runner: Any, inputs: Any, n: int) -> Callable[[], object]:
        x = np.asarray(inputs[IMAGES["bench"]])
        return lambda: raw_output(runner, x[:n])

    def benchmark(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path | None = None) -> Speed:
        return batch_speed(lambda n: self.batch_call(runner, inputs, n), bench)

    def write_outputs(self, runner: Any, inputs: Any, bench: BenchmarkConfig, out_dir: Path) -> None:
        from edgeopt.workloads.object_detection.images import frames_of, reference_boxes
        from edgeopt.workloads.object_detection.quality import DETECTIONS_FILE, save_detections

        images = np.asarray(inputs[IMAGES["eval"]])
        frames = np.asarray(inputs[FRAMES])
        dets = detections(runner, images, frames_of(frames), bench.quality_batch_size, SCORE_THRESHOLD)
        n_classes = int(raw_output(runner, images[:1]).shape[1] - 4)
        labels = reference_boxes({k: inputs[k] for k in ("gt_image", "gt_boxes", "gt_classes")}, len(images)) \
            if _has(inputs, "gt_image") else None
        save_detections(Path(out_dir) / DETECTIONS_FILE, dets, frames, n_classes, float(inputs[THRESHOLD]), labels)

    def quality(self, candidate_dir: Path, baseline_dir: Path) -> Quality:
        """mAP@[.5:.95] and mAP@.5 against the reference boxes, detections per image; retention as `quality`
        explains (the mAP itself for pseudo-labels, candidate / base against labels)."""
        from edgeopt.workloads.object_detection.quality import DETECTIONS_FILE, quality_and_intervals

        try:
            metrics, kept, ci = quality_and_intervals(Path(candidate_dir) / DETECTIONS_FILE,
                                                      Path(baseline_dir) / DETECTIONS_FILE)
        except ValueError as err:  # e.g. a baseline that detects nothing confidently: mAP is undefined
            raise CandidateError(f"cannot score detections against the reference: {err}") from None
        # mAP (all of the retention) is not a mean over images: no CI (see quality.detection_intervals).
        return Quality(metrics=metrics, retention=kept, ci=ci)

    # -- serving ----------------------------------------------------------------------------------

    def python_model(self) -> Path:
        return Path(__file__).with_name("serving_code.py")

    def serving_artifacts(self, base: BaseModelInfo) -> dict[str, Path]:
        return {}

    def serving_config(self, cfg: PipelineConfig, base: BaseModelInfo) -> dict[str, Any]:
        """The measured input size and post-processing, the class names, the served confidence, batch, threads."""
        from edgeopt.workloads.object_detection.boxes import IOU_THRESHOLD, MAX_DETECTIONS

        model = read_config(base.path)
        return {"input_size": model.input_size, "class_names": model.class_names, "score_threshold": SERVING_SCORE,
                "iou_threshold": IOU_THRESHOLD, "max_detections": MAX_DETECTIONS,
                "batch_size": cfg.benchmark.quality_batch_size, "threads": cfg.benchmark.threads}

    def load_check(self, model: Any, data_dir: Path, measurement_dir: Path) -> tuple[bool, str]:
        """The registered model, given the first evaluation images (already letterboxed: served as they are),
        must find the measured detections of score >= its threshold: the same classes, scores within 1e-3."""
        from edgeopt.workloads.object_detection.images import load_sets
        from edgeopt.workloads.object_detection.quality import DETECTIONS_FILE, confident, load_detections

        served = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
        n = min(int(getattr(served, "batch_size", LOAD_CHECK_MAX_IMAGES)), LOAD_CHECK_MAX_IMAGES)
        threshold = float(getattr(served, "score_threshold", SERVING_SCORE))
        probe = load_sets(data_dir)["eval"]["images"][:n]
        measured = confident(load_detections(Path(measurement_dir) / DETECTIONS_FILE)[0][: len(probe)], threshold)
        got = model.predict(list(probe))
        same = 0
        for (_, row), want in zip(got.iterrows(), measured, strict=True):
            scores = np.asarray(row["scores"], np.float64)
            if len(scores) == len(want) and sorted(row["class_ids"]) == sorted(want.classes.tolist()) and \
                    np.allclose(np.sort(scores), np.sort(want.scores), atol=1e-3):
                same += 1
        return same == len(probe), f"detections on {same}/{len(probe)} evaluation images equal the measured ones"


def _has(inputs: Any, key: str) -> bool:
    return key in getattr(inputs, "files", inputs)  # np.load's NpzFile, or a dict


WORKLOAD = ObjectDetection()
