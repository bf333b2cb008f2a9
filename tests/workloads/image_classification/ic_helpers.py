"""Helpers of the image-classification tests: runners over real models, and pipeline settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.iospec import Feed, IOSpec, TensorSpec
from edgeopt.workloads.image_classification.workload import WORKLOAD

CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
TEST_RUNTIME = "image-classification-test-torch"


class TorchFormRunner:
    """A TensorRunner over the task's PyTorch form (what the generic torch runtime does): feeds checked against
    the spec, the module called with the inputs in order, outputs named by the spec."""

    def __init__(self, model_dir: Path) -> None:
        import torch

        self._torch = torch
        form = WORKLOAD.torch_form(model_dir)
        self.module = form.module.eval()
        self.io_spec: IOSpec = form.io_spec
        self.calls = 0

    def run(self, feed: Feed) -> Feed:
        torch = self._torch
        problem = self.io_spec.feed_problem(feed)
        if problem:
            raise ValueError(problem)
        self.calls += 1
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(a) for a in self.io_spec.cast(feed).values()])
        return {self.io_spec.outputs[0].name: out.numpy().astype(np.float32)}


class ProbabilitiesRunner:
    """The same model ending in a softmax: probabilities out, as a graph with the softmax fused in returns."""

    def __init__(self, inner: TorchFormRunner) -> None:
        self.inner = inner
        self.io_spec = IOSpec(inputs=inner.io_spec.inputs,
                              outputs=(TensorSpec("probabilities", "float32", inner.io_spec.outputs[0].shape),))

    def run(self, feed: Feed) -> Feed:
        z = next(iter(self.inner.run(feed).values())).astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return {"probabilities": (p / p.sum(axis=1, keepdims=True)).astype(np.float32)}


class OrtRunner:
    """onnxruntime's InferenceSession as a TensorRunner, with the spec read off the graph."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def spec(values: Any) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(v.name, "float32", tuple(d if isinstance(d, int) else str(d) for d in v.shape))
                         for v in values)

        self.io_spec = IOSpec(inputs=spec(self.session.get_inputs()), outputs=spec(self.session.get_outputs()))
        self.batches: list[int] = []

    def run(self, feed: Feed) -> Feed:
        self.batches.append(len(next(iter(feed.values()))))
        names = self.io_spec.output_names
        return dict(zip(names, self.session.run(list(names), dict(feed)), strict=True))


def tiny_hf(folder: Path) -> Path:
    """A real (tiny, randomly initialised) Hugging Face ResNet classifier saved as safetensors, with a
    ViT-style image processor config: 64x64, ImageNet mean/std."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=7)
    ResNetForImageClassification(config).eval().save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 64, "width": 64},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2}))
    return folder


def register_test_runtime() -> str:
    """A runtime (in the real registry) that serves a candidate folder through TorchFormRunner."""
    from edgeopt.recipes import register_runtime

    @register_runtime(TEST_RUNTIME)
    def load(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int) -> TorchFormRunner:
        return TorchFormRunner(Path(candidate_dir))

    return TEST_RUNTIME


def pipeline(tmp: Path, **changes: Any) -> dict[str, Any]:
    """A minimal image-classification pipeline (params.yaml form) with its outputs under tmp."""
    raw: dict[str, Any] = {
        "task": "image-classification",
        "candidates": [{"name": "torch-fp32", "recipe": "torch-eager"}],
        "selection": {"baseline": "torch-fp32"},
        "registry": {"model_name": "ic-test"},
        "benchmark": {"throughput_batch_size": 4, "quality_batch_size": 8, "warmup_iterations": 1,
                      "min_iterations": 2, "min_time_s": 0.0},
    }
    raw.update(changes)
    return {"output_dir": str(tmp / "outputs"), "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            "pipelines": {"ic": raw}}
