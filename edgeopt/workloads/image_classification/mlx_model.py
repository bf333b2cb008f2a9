"""EfficientNet-Lite0 in mlx.nn: the MLX form of the bundled image-classification base folder.

The same network as `efficientnet-lite-pytorch`'s `EfficientNet.from_name("efficientnet-lite0")`: a 3x3/2
stem, 16 MBConv blocks (1x1 expand, depthwise kxk, 1x1 project, a residual when shape allows; no
squeeze-excitation in the Lite variants), a 1x1 head, global mean pooling and the classifier, ReLU6
throughout. Convolutions pad like TensorFlow's "SAME" (asymmetric, the extra row/column at the end), as
that package's `Conv2dStaticSamePadding` does at the configured image size.

Each BatchNorm (eval mode: running statistics) is folded into the convolution before it when the torch
weights are converted: y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is conv(x) with weights
scaled per output channel and a bias. Why fold rather than keep nn.BatchNorm: the folded network does one
pass over each activation instead of two, and an FP16 build rounds the folded weights once instead of
running the normalisation in FP16.

MLX convolutions are channels-last: activations NHWC, weights OHWI (torch: OIHW). The module takes the
task's NCHW float32 pixels and transposes once. Imported only where an MLX form is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import IOSpec, TensorSpec
from edgeopt.workloads.image_classification.model import (
    ARCHITECTURE,
    WEIGHTS_FILE,
    BaseFolderConfig,
    read_base_config,
)

# efficientnet-lite0's block table (efficientnet_lite_builder.py): repeats, kernel, stride, expand ratio,
# input and output channels. The Lite variants keep the stem (32) and head (1280) unscaled.
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3  # the package's batch_norm_epsilon


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ceil(size / stride); the odd pixel of padding goes at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """nn.Conv2d (weight OHWI, with bias: the folded BatchNorm) padded like TensorFlow's "SAME"."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(n_in, n_out, kernel, stride=stride, groups=groups, bias=True)
        self.kernel = kernel
        self.step = stride

    def __call__(self, x: mx.array) -> mx.array:
        (top, bottom), (left, right) = (_same_padding(x.shape[axis], self.kernel, self.step) for axis in (1, 2))
        return mx.conv_general(x, self.weight, stride=self.step, padding=([top, left], [bottom, right]),
                               groups=self.groups) + self.bias


def relu6(x: mx.array) -> mx.array:
    return mx.clip(x, 0.0, 6.0)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand, ReLU6], depthwise kxk, ReLU6, 1x1 project, [+ input]."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = n_in * expand
        if expand != 1:
            self.expand = SameConv2d(n_in, mid, 1)
        self.depthwise = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self.project = SameConv2d(mid, n_out, 1)
        self.residual = stride == 1 and n_in == n_out

    def __call__(self, x: mx.array) -> mx.array:
        y = relu6(self.expand(x)) if "expand" in self else x
        y = self.project(relu6(self.depthwise(y)))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """pixels NCHW [batch, 3, H, W] -> logits [batch, classes], float32 whatever the weights' dtype."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = SameConv2d(3, STEM, 3, stride=2)
        self.blocks = [MBConv(n_in if i == 0 else n_out, n_out, k, s if i == 0 else 1, e)
                       for repeats, k, s, e, n_in, n_out in BLOCKS for i in range(repeats)]
        self.head = SameConv2d(BLOCKS[-1][-1], HEAD, 1)
        self.fc = nn.Linear(HEAD, num_classes)

    def __call__(self, pixels: mx.array) -> mx.array:
        x = pixels.transpose(0, 2, 3, 1).astype(self.stem.weight.dtype)  # NCHW -> NHWC, the weights' dtype
        x = relu6(self.stem(x))
        for block in self.blocks:
            x = block(x)
        x = relu6(self.head(x))
        # Mean pooling over H, W (dropout is the identity at inference).
        return self.fc(x.mean(axis=(1, 2))).astype(mx.float32)


def _torch_names() -> dict[str, tuple[str, str | None]]:
    """MLX conv name -> (torch conv name, its BatchNorm's name); the classifier maps to itself, unfolded."""
    names: dict[str, tuple[str, str | None]] = {"stem": ("_conv_stem", "_bn0"), "head": ("_conv_head", "_bn1"),
                                                "fc": ("_fc", None)}
    i = 0
    for repeats, _k, _s, expand, _n_in, _n_out in BLOCKS:
        for _ in range(repeats):
            if expand != 1:
                names[f"blocks.{i}.expand"] = (f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0")
            names[f"blocks.{i}.depthwise"] = (f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1")
            names[f"blocks.{i}.project"] = (f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2")
            i += 1
    return names


def convert_torch_weights(state: dict[str, np.ndarray]) -> dict[str, mx.array]:
    """The package's state dict (numpy, OIHW) -> this module's parameters (OHWI, BatchNorm folded, float32).

    Every torch tensor must be used (num_batches_tracked, a training counter, aside): a key this port does
    not know means another architecture, refused rather than half-loaded.
    """
    out: dict[str, mx.array] = {}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CandidateError(f"the weights have no {key} (not {ARCHITECTURE}?)")
        used.add(key)
        return np.asarray(state[key], dtype=np.float64)  # fold in float64, round once

    for name, (conv, bn) in _torch_names().items():
        weight = take(f"{conv}.weight")
        if bn is None:  # the classifier: a Linear layer, same [out, in] layout in both frameworks
            out[f"{name}.weight"] = mx.array(weight.astype(np.float32))
            out[f"{name}.bias"] = mx.array(take(f"{conv}.bias").astype(np.float32))
            continue
        scale = take(f"{bn}.weight") / np.sqrt(take(f"{bn}.running_var") + BN_EPS)
        bias = take(f"{bn}.bias") - take(f"{bn}.running_mean") * scale
        used.add(f"{bn}.num_batches_tracked")
        folded = weight * scale[:, None, None, None]
        out[f"{name}.weight"] = mx.array(folded.transpose(0, 2, 3, 1).astype(np.float32))  # OIHW -> OHWI
        out[f"{name}.bias"] = mx.array(bias.astype(np.float32))
    unused = sorted(set(state) - used)
    if unused:
        raise CandidateError(f"the weights have tensors the {ARCHITECTURE} port does not know: "
                             f"{', '.join(unused[:3])}{' ...' if len(unused) > 3 else ''}")
    return out


def _read_torch_state(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise CandidateError(f"{path}: not found (the MLX form converts the base folder's safetensors weights)")
    try:
        return dict(load_file(str(path)))
    except Exception as err:
        raise CandidateError(f"{path}: cannot read safetensors: {' '.join(str(err).split())[:200]}") from None


def io_spec(cfg: BaseFolderConfig) -> IOSpec:
    """The bundled form's tensors: float32 pixels [batch, 3, size, size] -> float32 logits [batch, classes]."""
    return IOSpec(inputs=(TensorSpec(cfg.input_name, "float32", ("batch", 3, cfg.image_size, cfg.image_size)),),
                  outputs=(TensorSpec("logits", "float32", ("batch", cfg.num_classes)),))


def mlx_module(model_dir: Path, weights: bool = True) -> tuple[EfficientNetLite0, IOSpec]:
    """The MLX EfficientNet-Lite0 of a bundled-form folder (its `config.json`) and its I/O spec.

    weights: convert and load the folder's torch weights (`model.safetensors`), strictly; False: the
    architecture only, for a caller that loads converted MLX weights itself.
    """
    model_dir = Path(model_dir)
    try:
        cfg = read_base_config(model_dir)
    except Exception as err:  # UserError of a folder that is not the bundled form
        raise CandidateError(f"no MLX form for {model_dir}: {' '.join(str(err).split())[:200]}") from None
    if cfg.layout != "NCHW":
        raise CandidateError(f"no MLX form for layout {cfg.layout}")
    model = EfficientNetLite0(cfg.num_classes)
    if weights:
        params: dict[str, Any] = convert_torch_weights(_read_torch_state(model_dir / WEIGHTS_FILE))
        model.load_weights(list(params.items()), strict=True)
    model.eval()
    return model, io_spec(cfg)
