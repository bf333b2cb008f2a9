"""PyTorch eager: the FP32 reference candidate, run as the task's own PyTorch module.

The module comes from the task's workload (`Workload.torch_form`); this adapter only copies the
weights and runs named tensors through it. torch and transformers are imported inside functions so
importing this module only registers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.iospec import Feed, IOSpec
from edgeopt.recipes import (
    BuildContext,
    BuildOutput,
    NoOptions,
    Recipe,
    register_recipe,
    register_runtime,
)
from edgeopt.tuning import Settings, SettingsSpace

if TYPE_CHECKING:
    from edgeopt.workloads.base import TorchForm

# Files of a Hugging Face folder that define the model itself (the tokenizer lives in base.tokenizer_dir).
_CONFIG_FILE = "config.json"
_PREPROCESSING_FILES = ("preprocessor_config.json",)
_WEIGHTS_FILE = "model.safetensors"
_SHARD_INDEX = "model.safetensors.index.json"
# The task of a torch candidate whose details name none (built when this runtime was text-embedding only).
_LEGACY_TASK = "text-embedding"


def _torch_form(task: str, model_dir: Path) -> TorchForm:
    from edgeopt.workloads.base import get_workload

    return get_workload(task).torch_form(model_dir)


def _build_torch_eager(ctx: BuildContext) -> BuildOutput:
    if ctx.parent is not None:
        raise CandidateError("torch-eager builds from the base model only")
    if ctx.base.format != "hf":
        raise CandidateError(f"torch-eager needs a Hugging Face base model, got format {ctx.base.format!r}")
    src = Path(ctx.base.path)
    if not (src / _CONFIG_FILE).is_file():
        raise CandidateError(f"{src} has no {_CONFIG_FILE}")
    if (src / _WEIGHTS_FILE).is_file():
        weights = [_WEIGHTS_FILE]
        model_file = _WEIGHTS_FILE
    elif (src / _SHARD_INDEX).is_file():
        weights = [_SHARD_INDEX, *sorted(p.name for p in src.glob("model-*.safetensors"))]
        model_file = _SHARD_INDEX
    else:
        raise CandidateError(f"{src} has no safetensors weights (pickled .bin weights are not loaded)")
    # The preprocessing the model was trained with travels with it (image processors' config).
    extra = [name for name in _PREPROCESSING_FILES if (src / name).is_file()]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    for name in [_CONFIG_FILE, *weights, *extra]:
        shutil.copy2(src / name, ctx.out_dir / name)
    # Loading the copy proves the task can run it, and gives the spec the runtime will serve.
    spec = _torch_form(ctx.base.task, ctx.out_dir).io_spec
    return BuildOutput(
        format="hf",
        runtime="torch",
        precision="fp32",
        model_file=model_file,
        details={"files": [_CONFIG_FILE, *weights, *extra], "task": ctx.base.task},
        io_spec=spec.to_dict(),
    )


register_recipe(
    Recipe(
        name="torch-eager",
        framework="torch",
        options_model=NoOptions,
        accepts=("base",),
        base_formats=("hf",),
        build=_build_torch_eager,
        description="The base Hugging Face model run as-is in PyTorch eager (FP32 reference).",
    )
)


class TorchRunner:
    """The task's PyTorch module under inference_mode with a fixed thread count: named tensors in and out."""

    def __init__(self, model_dir: Path, task: str, threads: int) -> None:
        import torch

        self._torch = torch
        self._threads = threads
        torch.set_num_threads(threads)
        form = _torch_form(task, model_dir)
        self._module = form.module.eval()
        self.io_spec: IOSpec = form.io_spec

    def run(self, feed: Feed) -> Feed:
        torch = self._torch
        spec = self.io_spec
        problem = spec.feed_problem(feed)
        if problem:
            raise CandidateError(f"torch runtime: {problem}")
        args = [torch.from_numpy(a) for a in spec.cast(feed).values()]  # in io_spec's input order
        # Set per call too: another adapter in the same process may have changed it.
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            out = self._module(*args)
        outs = tuple(out) if isinstance(out, tuple | list) else (out,)
        if len(outs) != len(spec.outputs):
            raise CandidateError(f"the torch module returned {len(outs)} output(s), its spec declares "
                                 f"{len(spec.outputs)} ({', '.join(spec.output_names)})")
        result: Feed = {}
        for t, value in zip(spec.outputs, outs, strict=True):
            array = value.detach().cpu().numpy()
            result[t.name] = array.astype(np.float32, copy=False) if t.is_float else array
        return result

    def runtime_info(self) -> dict[str, Any]:
        torch = self._torch
        return {"torch": torch.__version__, "threads": torch.get_num_threads(), "settings": {"threads": self._threads},
                "inputs": list(self.io_spec.input_names)}


TORCH_SETTINGS = SettingsSpace(default={"threads": "threads"}, alternatives={"threads": [1]})


@register_runtime("torch", settings=TORCH_SETTINGS)
def load_torch(candidate_dir: Path, model_file: str, details: dict[str, Any], threads: int,
               settings: Settings | None = None) -> TorchRunner:
    # model_file names the safetensors weights; transformers finds them (and config.json) in the folder.
    if not model_file.endswith((".safetensors", _SHARD_INDEX)):
        raise CandidateError(f"the torch runtime loads safetensors weights only, not {model_file!r}")
    if not (Path(candidate_dir) / model_file).is_file():
        raise CandidateError(f"{Path(candidate_dir) / model_file} does not exist")
    # Candidates built before the task was recorded ran the sentence encoder: the torch runtime knew no other.
    task = details.get("task", _LEGACY_TASK)
    if not isinstance(task, str) or not task:
        raise CandidateError(f"the torch runtime needs the task its module comes from, got {task!r}")
    return TorchRunner(Path(candidate_dir), task, int((settings or {}).get("threads", threads)))
