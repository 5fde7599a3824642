"""Small keras_hub vision transformers with numpy weights, and their heatmaps, the
cross-backend reference of tests/test_transformers.py.

ViT (class token), DeiT (class + distillation tokens), DINOv2 with 4 register tokens behind a
functional head that reads the class token, and Swin (no class token, two stages): random
configurations small enough to build in a second, weights drawn from a numpy RNG
(:func:`set_weights`, the same on every backend), so no weights are stored. Run under
TensorFlow to (re)write ``data/transformers_reference.npz``:
``KERAS_BACKEND=tensorflow python tests/transformers_reference.py``.
"""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np

PATH = os.path.join(os.path.dirname(__file__), "data", "transformers_reference.npz")
SHAPE = (16, 16, 3)
CLASSES = 3
MODELS = ("vit", "deit", "dinov2", "swin")
# the maps stored per model: (method, layer) with None for the automatic layer; the
# attention methods on the models whose attention is a MultiHeadAttention (not Swin)
RUNS = [("gradcam", None), ("hirescam", None), ("layercam", None), ("rollout", None),
        ("grad-rollout", None)]
ATTENTION_METHODS = ("rollout", "grad-rollout")


def require_keras_hub() -> None:
    """Skip the calling test module without keras_hub, except on CI (``CI`` set), where
    scripts/run_tests.py installs it (scripts/keras_hub_env.py): there it fails."""
    import pytest

    if importlib.util.find_spec("keras_hub") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI is set, but keras_hub is not installed: scripts/run_tests.py "
                               "installs it (scripts/keras_hub_env.py)")
        pytest.skip("keras_hub is not installed (python scripts/keras_hub_env.py installs it)",
                    allow_module_level=True)


def runs(name: str) -> list[tuple[str, str | None]]:
    """The runs of :data:`RUNS` that apply to model ``name``."""
    return [(method, layer) for method, layer in RUNS
            if name != "swin" or method not in ATTENTION_METHODS]
# model -> (patch grid of the automatic layer, prefix tokens)
GRIDS = {"vit": ((4, 4), 1), "deit": ((4, 4), 2), "dinov2": ((4, 4), 5), "swin": ((8, 8), 0)}


def build(name: str, seed: int = 0) -> keras.Model:
    """The small keras_hub model ``name`` (one of :data:`MODELS`), numpy weights. Its
    layers are named (``vit_backbone``, ...): Keras numbers automatic names apart in a
    process that built one before (``vi_t_backbone_1``), and the tests read paths."""
    import keras_hub

    models = keras_hub.models
    if name == "vit":
        model = models.ViTImageClassifier(
            backbone=models.ViTBackbone(image_shape=SHAPE, patch_size=4, num_layers=2,
                                        num_heads=2, hidden_dim=16, mlp_dim=32,
                                        name="vit_backbone"),
            num_classes=CLASSES, name="vit")
    elif name == "deit":
        model = models.DeiTImageClassifier(
            backbone=models.DeiTBackbone(image_shape=SHAPE, patch_size=4, num_layers=2,
                                         num_heads=2, hidden_dim=16, intermediate_dim=32,
                                         name="deit_backbone"),
            num_classes=CLASSES, name="deit")
    elif name == "dinov2":
        backbone = models.DINOV2Backbone(
            patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
            num_register_tokens=4, image_shape=SHAPE, position_embedding_shape=SHAPE,
            name="dinov2_backbone")
        inputs = keras.Input(SHAPE, name="images")
        tokens = backbone(inputs)
        outputs = keras.layers.Dense(CLASSES, name="predictions")(tokens[:, 0])
        model = keras.Model(inputs, outputs, name="dinov2_classifier")
    elif name == "swin":
        model = models.SwinTransformerImageClassifier(
            backbone=models.SwinTransformerBackbone(
                image_shape=SHAPE, embed_dim=16, depths=(2, 2), num_heads=(2, 2),
                window_size=4, patch_size=2, drop_path=0.0, name="swin_backbone"),
            num_classes=CLASSES, name="swin")
    else:
        raise ValueError(f"name must be one of {MODELS}; received {name!r}")
    return set_weights(model, seed)


def set_weights(model: keras.Model, seed: int) -> keras.Model:
    """Numpy weights, the same on every backend: matrices N(0, 0.3^2), LayerNorm scales
    1 + N(0, 0.05^2), other vectors N(0, 0.05^2)."""
    rng = np.random.RandomState(seed)
    values = []
    for weight in model.weights:
        shape, dtype = tuple(weight.shape), keras.backend.standardize_dtype(weight.dtype)
        noise = rng.standard_normal(shape)
        if len(shape) > 1:
            value = noise * 0.3
        elif weight.name == "gamma":
            value = 1 + noise * 0.05
        else:
            value = noise * 0.05
        values.append(value.astype(dtype))
    model.set_weights(values)
    return model


def docs(count: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.RandomState(seed).rand(count, *SHAPE).astype("float32")


def run_key(model: str, method: str, layer: str | None) -> str:
    return f"{model}/{method}/{layer or 'auto'}"


def compute(name: str, model: keras.Model | None = None) -> dict[str, np.ndarray]:
    """Heatmaps ``(N, h, w)`` of every run of :data:`RUNS` on ``name``'s model."""
    import gradcam_callbacks as gc

    model = build(name) if model is None else model
    x = docs()
    out = {}
    for method, layer in runs(name):
        found = gc.explain_predictions(model, x, layer=layer, method=method)
        out[run_key(name, method, layer)] = np.stack([e.targets[0].heatmap for e in found])
    return out


if __name__ == "__main__":
    assert keras.backend.backend() == "tensorflow", "write the reference under TensorFlow"
    stored = {}
    for name in MODELS:
        stored.update(compute(name))
    np.savez_compressed(PATH, **stored)
    print(f"wrote {PATH}: {sorted(stored)}")
