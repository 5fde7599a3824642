"""Vision transformers explained with no configuration: keras_hub's ViT (class token), DeiT
(class + distillation tokens), DINOv2 with 4 register tokens behind a functional head, and
Swin (windowed attention, two stages), small configurations with numpy weights
(tests/transformers_reference.py); and a functional patch-token model.

A token layer's map lies on the patch grid with the prefix tokens dropped: a planted score
that reads one patch token only must light that cell. The heatmaps equal the stored
reference (written under TensorFlow) on every backend.

keras_hub is installed by scripts/run_tests.py (``--no-deps``, see scripts/keras_hub_env.py).
Without it these tests skip, except on CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from transformers_reference import require_keras_hub

import gradcam_callbacks as gc
from gradcam_callbacks.explain import plan
from gradcam_callbacks.layers import auto_layer

require_keras_hub()

from transformers_reference import (  # noqa: E402
    GRIDS,
    MODELS,
    PATH,
    SHAPE,
    build,
    compute,
    docs,
    run_key,
    runs,
)

# the last token layer of each backbone, read by the planted head (no graph node inside
# keras_hub's encoders: reached by path)
LAST_TOKENS = {"vit": "vit_backbone/vit_encoder/ln", "deit": "deit_backbone/deit_encoder/ln",
               "dinov2": "dinov2_backbone/dinov2_backbone_layernorm", "swin": "swin_backbone/norm"}
AUTO = {"vit": "vit_backbone/vit_encoder/transformer_block_1/ln_1",
        "deit": "deit_backbone/deit_encoder/transformer_block_1/ln_1",
        "dinov2": "dinov2_backbone/dinov2_backbone_encoder/layers_0/norm1",
        "swin": "swin_backbone/stage_0/blocks_0/norm1"}
# what the default method reads, as Explanation.layer says: rollout reads the attention
# layers, not the automatic layer (Swin's default, HiResCAM, reads that layer)
READ = {"vit": "vit_backbone/vit_encoder/transformer_block_1/mha .. transformer_block_2/mha "
               "(2 attention layers)",
        "deit": "deit_backbone/deit_encoder/transformer_block_1/mha .. transformer_block_2/mha "
                "(2 attention layers)",
        "dinov2": "dinov2_backbone/dinov2_backbone_encoder/layers_0/attention/attention .. "
                  "layers_1/attention/attention (2 attention layers)",
        "swin": AUTO["swin"]}


@pytest.fixture(scope="module")
def models():
    return {name: build(name) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_explained_with_no_configuration_on_the_patch_grid(models, name):
    expl = gc.explain_prediction(models[name], docs(1))
    assert plan(models[name]).layer.path == AUTO[name]
    assert expl.layer == READ[name]
    assert expl.targets[0].heatmap.shape == GRIDS[name][0]
    assert expl.targets[0].heatmap.max() > 0.99


@pytest.mark.parametrize("name", MODELS)
def test_heatmaps_equal_the_stored_reference(models, name):
    stored = np.load(PATH)
    found = compute(name, models[name])
    for method, layer in runs(name):
        key = run_key(name, method, layer)
        np.testing.assert_allclose(found[key], stored[key], atol=1e-5, err_msg=key)


class ReadOneToken(keras.layers.Layer):
    """A score that reads token ``index`` only: ``sum(t_index ** 2)``."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, tokens):
        return keras.ops.sum(tokens[:, self.index] ** 2, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", MODELS)
def test_a_planted_patch_token_lights_its_own_cell(models, name):
    # the score reads one patch token of the backbone's last layer: only its cell has a
    # gradient, so HiResCAM's map is 1 there and 0 elsewhere, whatever the prefix count
    prefix = GRIDS[name][1]
    backbone = models[name].layers[1]
    last = backbone.output
    tokens = int(last.shape[1])
    stage_grid = int(np.sqrt(tokens - prefix))
    row, col = 1, 2
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, ReadOneToken(prefix + row * stage_grid + col)(backbone(inputs)))
    heatmap = gc.explain_prediction(model, docs(1), layer=LAST_TOKENS[name],
                                    method="hirescam").targets[0].heatmap
    assert heatmap.shape == (stage_grid, stage_grid)
    expected = np.zeros_like(heatmap)
    expected[row, col] = 1
    np.testing.assert_allclose(heatmap, expected, atol=1e-6)


def patch_token_model(pool: str = "mean") -> keras.Model:
    """Conv2D patching, Reshape to tokens, LayerNormalization, MultiHeadAttention, pooled."""
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 4, strides=4, name="patchify")(inputs)
    x = keras.layers.Reshape((16, 8), name="tokens")(x)
    normed = keras.layers.LayerNormalization(name="norm")(x)
    attended = keras.layers.MultiHeadAttention(2, 4, name="attention")(normed, normed)
    x = keras.layers.Add(name="residual")([x, attended])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name="patch_tokens")


def test_a_functional_patch_token_model_is_not_explained_at_its_patch_embedding():
    model = patch_token_model()
    assert auto_layer(model).path == "norm"
    x = np.random.RandomState(0).rand(1, 16, 16, 1).astype("float32")
    assert gc.explain_prediction(model, x).targets[0].heatmap.shape == (4, 4)
    # a token layer given by name is a map too (rank 3 was refused)
    expl = gc.explain_prediction(model, x, layer="residual", method="layercam")
    assert expl.layer == "residual" and expl.targets[0].heatmap.shape == (4, 4)


def test_reshape_overrides_the_grid_and_is_checked():
    model = patch_token_model()
    x = np.random.RandomState(0).rand(1, 16, 16, 1).astype("float32")
    # a transposed grid, written by hand: the map is the default one transposed
    plain = gc.explain_prediction(model, x, layer="residual").targets[0].heatmap
    turned = gc.explain_prediction(
        model, x, layer="residual",
        reshape=lambda t: t.reshape(-1, 4, 4, t.shape[-1]).transpose(0, 2, 1, 3))
    np.testing.assert_allclose(turned.targets[0].heatmap, plain.T, atol=1e-7)
    with pytest.raises(TypeError, match="reshape must be None or a function"):
        gc.explain_prediction(model, x, reshape=(4, 4))
    with pytest.raises(ValueError, match=r"reshape must turn layer 'residual'"):
        gc.explain_prediction(model, x, layer="residual", reshape=lambda t: t)


def test_tokens_on_no_grid_ask_for_reshape():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 4, strides=4)(inputs)
    x = keras.layers.Reshape((16, 8))(x)
    x = keras.layers.Dense(8, name="mix")(x[:, :7])  # 7 tokens: no grid of 4x4 patches
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match=r"7 tokens, which lie on no patch grid.*reshape="):
        gc.explain_prediction(model, np.zeros((1, 16, 16, 1), "float32"), layer="mix")


def test_rollout_equals_a_hand_written_rollout(models):
    # the attention weights read here by calling each block's own layers, outside the pass
    model, x = models["vit"], docs(2)
    backbone = model.get_layer("vit_backbone")
    tokens = backbone.get_layer("vit_patching_and_embedding")(x)
    weights = []
    for block in backbone.get_layer("vit_encoder").encoder_layers:
        normed = block.layer_norm_1(tokens)
        weights.append(keras.ops.convert_to_numpy(
            block.mha(normed, normed, return_attention_scores=True)[1]))
        tokens = block(tokens)
    mixed = np.stack(weights, axis=1).mean(axis=2)  # (N, L, T, T), heads averaged
    mixed = 0.5 * mixed + 0.5 * np.eye(mixed.shape[-1])
    mixed /= mixed.sum(axis=-1, keepdims=True)
    rolled = np.eye(mixed.shape[-1])
    for layer in range(mixed.shape[1]):
        rolled = mixed[:, layer] @ rolled
    hand = rolled[:, 0, 1:].reshape(2, 4, 4)  # the class token's row over the 4x4 patches
    hand /= hand.max(axis=(1, 2), keepdims=True)
    found = gc.explain_predictions(model, x, method="rollout")
    assert found[0].method == "Attention rollout"
    np.testing.assert_allclose(np.stack([e.targets[0].heatmap for e in found]), hand,
                               atol=1e-5)


def test_grad_rollout_is_per_target_and_rollout_is_not(models):
    model, x = models["dinov2"], docs(1)
    rolled = gc.explain_prediction(model, x, targets=[0, 1], method="rollout")
    np.testing.assert_array_equal(rolled.targets[0].heatmap, rolled.targets[1].heatmap)
    weighted = gc.explain_prediction(model, x, targets=[0, 1], method="grad-rollout")
    assert weighted.targets[0].heatmap.shape == (4, 4)
    assert np.abs(weighted.targets[0].heatmap - weighted.targets[1].heatmap).max() > 0.01


def test_rollout_on_swin_is_refused_by_name(models):
    with pytest.raises(ValueError, match=r"method='rollout' reads the attention weights.*"
                                         r"model 'swin' has none"):
        gc.explain_prediction(models["swin"], docs(1), method="rollout")


def test_the_callback_watches_a_vit_fine_tune_with_rollout(models, tmp_path):
    # keras_hub's task models convert inputs in fit (tf.data or grain): a functional
    # wrapper trains with plain Keras
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, models["vit"](inputs))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = docs(8), np.arange(8) % 3
    cam = gc.GradCamCallback(x[:2], log_dir=tmp_path, method=["hirescam", "rollout"],
                             log_initial=False)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cam])
    (_, hires, *_), (name, rolled, *_) = cam.explain_probes_by_method()
    assert name == "rollout" and rolled.shape == hires.shape == (2, 4, 4)


# the automatic method (method=None, the default): rollout where Grad-CAM does not localise
AUTO_METHOD = {"vit": "Attention rollout", "deit": "Attention rollout",
               "dinov2": "Attention rollout", "swin": "HiResCAM"}


@pytest.mark.backend_agnostic  # the choice reads the model only; the maps of the forward-only
# rollout are checked on every backend by test_heatmaps_equal_the_stored_reference
@pytest.mark.parametrize("name", MODELS)
def test_the_default_method_is_chosen_per_model(models, name):
    x = docs(1)
    assert gc.explain_prediction(models[name], x).method == AUTO_METHOD[name]
    # an explicit method is never overridden
    assert gc.explain_prediction(models[name], x, method="gradcam").method == "Grad-CAM"


@pytest.mark.backend_agnostic
def test_the_default_method_on_a_cnn_and_on_a_layer_you_give(models):
    # a CNN keeps Grad-CAM (ELI5's numbers: tests/test_eli5_parity.py runs the default)
    from models import images, small_cnn

    assert gc.explain_prediction(small_cnn(), images(1)).method == "Grad-CAM"
    # a layer given on a ViT: a gradient method on it (rollout reads no layer), and a
    # mean-pooled patch-token model without prefix tokens: HiResCAM
    given = gc.explain_prediction(models["vit"], docs(1), layer=AUTO["vit"])
    assert given.method == "HiResCAM"
    x = np.random.RandomState(0).rand(1, 16, 16, 1).astype("float32")
    assert gc.explain_prediction(patch_token_model(), x).method == "HiResCAM"


def test_the_callback_names_the_method_it_chose(models, tmp_path):
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, models["vit"](inputs))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = docs(4), np.arange(4) % 3
    cam = gc.GradCamCallback(x[:2], log_dir=tmp_path, log_initial=False)
    assert cam.get_config()["method"] is None
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cam])
    assert [m.name for m in cam.methods] == ["rollout"]
    assert cam._reports[0].title == "Attention rollout"


@pytest.mark.backend_agnostic
def test_the_command_line_without_method_chooses_per_model(models):
    # what `explain` runs without --method (a subprocess on a saved ViT took a minute)
    from PIL import Image

    from gradcam_callbacks.cli.explain_command import chosen_methods
    from gradcam_callbacks.cli.parse import build_parser
    from gradcam_callbacks.cli.pipeline import ExplainOptions, Geometry
    from gradcam_callbacks.engine import plan

    def options(model, given):
        return ExplainOptions(
            model=model, plan=plan(model), geometry=Geometry(3, 16, 16, False), targets=None,
            top=None, class_names=None, preprocess="unit", colormap="viridis",
            alpha_limit=None, side_by_side=False, max_pixels=Image.MAX_IMAGE_PIXELS,
            methods=chosen_methods(build_parser().parse_args(
                ["explain", "m.keras", "x.png", "--out", "o"]
                + [f"--method={name}" for name in given or []])))

    assert options(models["vit"], None).method_names == ["rollout"]
    assert options(models["swin"], None).method_names == ["hirescam"]
    assert options(models["vit"], ["gradcam", "layercam"]).method_names == ["gradcam",
                                                                           "layercam"]
