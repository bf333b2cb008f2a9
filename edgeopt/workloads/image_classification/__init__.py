"""image-classification: the task's building blocks (pure functions, no pipeline wiring).

- `model`:      the bundled EfficientNet-Lite0 (ImageNet-1k) and a self-describing safetensors base folder;
- `images`:     offline evaluation/calibration images from the photographs scikit-image ships, a user's
                class-per-subfolder image folder, and the model's preprocessing;
- `quality`:    numpy metrics of a candidate's logits against the FP32 base's on identical inputs;
- `validation`: the Great Expectations suite over the evaluation and calibration arrays.

Heavy libraries (torch, Pillow, scikit-image, Great Expectations) are imported inside the functions.
"""
