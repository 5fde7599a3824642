"""The CAM family (issue 13): every method against an independent numpy transcription of its
definition, fed with activations and gradients this test takes itself with the backend's own
autodiff; properties of the numpy method functions; the same maps on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from methods_reference import PATH, RUNS, TARGETS, cases, run_key, spatial_cnn
from models import images

import gradcam_callbacks as gc
from gradcam_callbacks import backends, methods
from gradcam_callbacks.explain import explain_raw, plan
from gradcam_callbacks.methods import scorecam
from gradcam_callbacks.methods.base import CamInputs

BACKEND = keras.backend.backend()
GRADIENT_METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
SCALE_FREE = ["gradcam", "xgradcam", "hirescam", "layercam"]
TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM",
          "hirescam": "HiResCAM", "layercam": "LayerCAM", "eigencam": "Eigen-CAM",
          "scorecam": "Score-CAM"}


# ---------------------------------------------------------------- independent references

def backend_activations_and_grads(model, docs, targets):
    """``A (N, h, w, C)`` and ``G (N, K, h, w, C)`` at layer "feat", by the backend's own
    autodiff through the layers after it (not through the engine)."""
    names = [layer.name for layer in model.layers]
    tail = model.layers[names.index("feat") + 1:]
    acts = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.get_layer("feat").output)(
        docs, training=False))
    targets = np.asarray(targets)

    def head(a):
        for layer in tail:
            a = layer(a)
        return a

    grads = []
    for k in range(targets.shape[1]):
        onehot = np.eye(4, dtype="float32")[targets[:, k]]
        if BACKEND == "tensorflow":
            import tensorflow as tf

            a = tf.constant(acts)
            with tf.GradientTape() as tape:
                tape.watch(a)
                score = tf.reduce_sum(head(a) * onehot)
            grads.append(tape.gradient(score, a).numpy())
        elif BACKEND == "jax":
            import jax
            import jax.numpy as jnp

            grads.append(np.asarray(jax.jit(jax.grad(lambda a, o=onehot: jnp.sum(head(a) * o)))(
                jnp.asarray(acts))))
        else:
            import torch

            a = torch.tensor(acts, requires_grad=True)
            (grad,) = torch.autograd.grad((head(a) * torch.tensor(onehot)).sum(), a)
            grads.append(grad.numpy())
    return acts.astype(np.float64), np.stack(grads, axis=1).astype(np.float64)


def eli5_normalise(lmap):
    lmap = np.maximum(lmap, 0)
    return lmap / (lmap.max() + 1e-7)


def reference_map(method, A, G):
    """One map ``(h, w)`` from ``A, G (h, w, C)``, transcribed from the issue's definitions."""
    if method == "gradcam":
        lmap = (G.mean(axis=(0, 1)) * A).sum(-1)
    elif method == "gradcam++":
        alpha = G ** 2 / (2 * G ** 2 + A.sum(axis=(0, 1)) * G ** 3 + 1e-6)
        alpha[G == 0] = 0
        lmap = ((alpha * np.maximum(G, 0)).sum(axis=(0, 1)) * A).sum(-1)
    elif method == "xgradcam":
        lmap = ((G * A).sum(axis=(0, 1)) / (A.sum(axis=(0, 1)) + 1e-7) * A).sum(-1)
    elif method == "hirescam":
        lmap = (G * A).sum(-1)
    elif method == "layercam":
        lmap = (np.maximum(G, 0) * A).sum(-1)
    elif method == "eigencam":
        X = A.reshape(-1, A.shape[-1])
        centred = X - X.mean(axis=0)
        projection = centred @ np.linalg.svd(centred)[2][0]
        if np.corrcoef(projection, X.mean(axis=1))[0, 1] < 0:
            projection = -projection
        lmap = projection.reshape(A.shape[:2])
    return eli5_normalise(lmap)


def reference_upsample(a, height, width):
    """Bilinear, align_corners=True, pixel by pixel from the four neighbours."""
    h, w = a.shape
    out = np.empty((height, width))
    for i in range(height):
        y = i * (h - 1) / (height - 1)
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); fy = y - y0  # noqa: E702
        for j in range(width):
            x = j * (w - 1) / (width - 1)
            x0 = int(np.floor(x)); x1 = min(x0 + 1, w - 1); fx = x - x0  # noqa: E702
            out[i, j] = ((1 - fy) * ((1 - fx) * a[y0, x0] + fx * a[y0, x1])
                         + fy * ((1 - fx) * a[y1, x0] + fx * a[y1, x1]))
    return out


def reference_scorecam(model, doc, A, targets, max_channels=None):
    """Score-CAM maps ``(K, h, w)`` for one doc, all masked inputs in one model call."""
    channels = A.shape[-1]
    keep = np.arange(channels)
    if max_channels is not None:
        keep = np.argsort(-A.std(axis=(0, 1)), kind="stable")[:max_channels]
    masks = []
    for c in keep:
        m = reference_upsample(A[..., c], *doc.shape[:2])
        masks.append((m - m.min()) / (m.max() - m.min() + 1e-8))
    masked = (doc[None] * np.stack(masks)[..., None]).astype("float32")
    outputs = keras.ops.convert_to_numpy(model(masked, training=False)).astype(np.float64)
    result = []
    for target in targets:
        s = outputs[:, target]
        w = np.zeros(channels)
        w[keep] = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        result.append(eli5_normalise((w * A).sum(-1)))
    return np.stack(result)


@pytest.fixture(scope="module")
def engine_cases():
    """Per case: model, docs, the test's own (A, G), and the engine's raw results."""
    found = []
    for case, model, docs in cases():
        A, G = backend_activations_and_grads(model, docs, TARGETS)
        found.append((case, model, docs, A, G))
    return found


# ---------------------------------------------------------------- against the references

@pytest.mark.xla_defaults
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_method_matches_numpy_transcription_of_its_definition(engine_cases, method):
    for _, model, docs, A, G in engine_cases:
        assert np.ptp(G[0, 0, ..., 0]) > 1e-4  # the gradients vary over space
        raw = explain_raw(model, docs, TARGETS, "feat", method=method)
        expected = np.array([[reference_map(method, A[n], G[n, k]) for k in range(2)]
                             for n in range(len(docs))])
        assert raw.heatmaps.shape == expected.shape
        # largest difference seen (TensorFlow oneDNN on and off, JAX at XLA level 0 and
        # default, torch): 8.6e-7 (Grad-CAM, JAX), 1.2e-7 for the others
        np.testing.assert_allclose(raw.heatmaps, expected, atol=1e-5)
        assert expected.max() > 0.99  # not a vacuous all-zero comparison


@pytest.mark.xla_defaults
@pytest.mark.parametrize("max_channels", [None, 2])
def test_scorecam_matches_numpy_transcription_of_its_definition(engine_cases, max_channels):
    for _, model, docs, A, _ in engine_cases:
        raw = explain_raw(model, docs, TARGETS, "feat", method="scorecam",
                          max_channels=max_channels, batch_size=4)
        expected = np.array([reference_scorecam(model, docs[n], A[n], TARGETS[n], max_channels)
                             for n in range(len(docs))])
        # largest difference seen (the same five runs): 1.5e-7
        np.testing.assert_allclose(raw.heatmaps, expected, atol=1e-5)
        kept = (raw.weights > 0).sum(-1)
        assert (kept == (max_channels or A.shape[-1])).all()
        np.testing.assert_allclose(raw.weights.sum(-1), 1, atol=1e-5)


@pytest.mark.xla_defaults
def test_methods_match_the_stored_cross_backend_reference():
    stored = dict(np.load(PATH))
    assert len(stored) == 2 * len(RUNS)
    for case, model, docs in cases():
        pass_plan = plan(model, "feat")
        chosen = [methods.choose(method, max_channels=max_channels)[0]
                  for method, max_channels in RUNS]
        raws = pass_plan.run(docs, pass_plan.targets(TARGETS, len(docs)), chosen, 4)
        for (method, max_channels), got in zip(RUNS, raws, strict=True):
            # stored by TensorFlow; largest difference seen (TensorFlow oneDNN on and off, JAX
            # at XLA level 0 and default, torch): 3.1e-6 (XGrad-CAM, JAX)
            np.testing.assert_allclose(got.heatmaps, stored[run_key(case, method, max_channels)],
                                       atol=3e-5, err_msg=f"{case} {method} {max_channels}")


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch's own upsampling")
def test_scorecam_upsampling_is_torch_align_corners_bilinear():
    import torch

    maps = np.random.RandomState(0).rand(3, 7, 5)
    theirs = torch.nn.UpsamplingBilinear2d(size=(224, 160))(torch.tensor(maps)[None])[0]
    ours = scorecam.channel_masks(maps, 224, 160)
    theirs = theirs.numpy()
    low = theirs.min(axis=(1, 2), keepdims=True)
    high = theirs.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ours, (theirs - low) / (high - low + 1e-8), atol=1e-6)


# ---------------------------------------------------------------- engine behaviour

def test_explanations_name_their_method_and_gradcam_stays_the_default():
    model = spatial_cnn(0)
    docs = images(2, (12, 12, 3), seed=1)
    default = gc.explain_predictions(model, docs, layer="feat")
    assert default[0].method == "Grad-CAM" and "Grad-CAM" in default[0].description
    descriptions = set()
    for name, title in TITLES.items():
        expls = gc.explain_predictions(model, docs, layer="feat", method=name)
        assert expls[0].method == title and expls[0].description.startswith(title)
        descriptions.add(expls[0].description)
        if name == "gradcam":
            for mine, theirs in zip(expls, default):
                np.testing.assert_array_equal(mine.targets[0].heatmap, theirs.targets[0].heatmap)
    assert len(descriptions) == len(TITLES)
    one = gc.explain_prediction(model, docs[:1], layer="feat", method="scorecam", max_channels=2)
    assert one.method == "Score-CAM"
    picture = gc.show_prediction(model, docs[:1], layer="feat", method="layercam")
    assert picture.size == (12, 12)


def test_weights_hold_channel_weights_or_nan():
    model = spatial_cnn(1, None)
    docs = images(2, (12, 12, 3), seed=2)
    for name in TITLES:
        raw = explain_raw(model, docs, [[0, 1], [2, 3]], "feat", method=name, max_channels=None)
        assert raw.weights.shape == (2, 2, 5) and raw.method.name == name
        if name in ("hirescam", "layercam"):
            assert np.isnan(raw.weights).all()
            continue
        activations = raw.activations[:, None].astype(np.float64)
        if name == "eigencam":  # the singular vector applies to the centred activations
            activations = activations - activations.mean(axis=(2, 3), keepdims=True)
        rebuilt = gc.cam.normalise((raw.weights[..., None, None, :] * activations).sum(-1))
        np.testing.assert_allclose(rebuilt, raw.heatmaps, atol=1e-5)


def test_scorecam_one_compiled_forward_per_chunk_and_batch_size_free():
    model = spatial_cnn(0)
    docs = images(3, (12, 12, 3), seed=3)
    layer = model.get_layer("feat")
    small = explain_raw(model, docs, None, "feat", method="scorecam", batch_size=4)
    traces = backends.score_function(model, layer, "feat", 0).traces
    again = explain_raw(model, docs, None, "feat", method="scorecam", batch_size=4)
    assert backends.score_function(model, layer, "feat", 0).traces == traces == 1
    large = explain_raw(model, docs, None, "feat", method="scorecam", batch_size=64)
    np.testing.assert_array_equal(small.heatmaps, again.heatmaps)
    np.testing.assert_allclose(small.heatmaps, large.heatmaps, atol=1e-6)


def test_scorecam_scores_masked_inputs_chunk_by_chunk(monkeypatch):
    rng = np.random.RandomState(0)
    activations = rng.rand(3, 4, 4, 10)
    docs = rng.rand(3, 16, 16, 3).astype("float32")
    weights = rng.randn(3, 5)
    seen = []

    def score(inputs):
        seen.append(inputs.copy())
        return inputs.mean(axis=(1, 2)) @ weights

    def run(**options):
        seen.clear()
        return scorecam.channel_scores(activations, docs, np.array([[0], [1], [4]]), score,
                                       max_channels=6, **options)

    scores = run(batch_size=7)
    # 18 masked inputs, at most 7 at once: three even chunks, never all 30 at once
    assert [len(s) for s in seen] == [6, 6, 6]
    assert (np.isfinite(scores).sum(-1) == 6).all()
    kept = np.argsort(-activations.std(axis=(1, 2)), axis=-1)[:, :6]
    assert all(set(np.flatnonzero(np.isfinite(scores[n, 0]))) == set(kept[n]) for n in range(3))
    masks = scorecam.channel_masks(activations[0, :, :, np.sort(kept[0])], 16, 16)
    np.testing.assert_allclose(seen[0], docs[0] * masks[..., None], atol=1e-6)
    # at most 5: one shape for every call, the last chunk's 2 extra rows zero
    np.testing.assert_allclose(run(batch_size=5), scores, rtol=1e-6)
    assert [len(s) for s in seen] == [5, 5, 5, 5]
    assert seen[-1][:3].any(axis=(1, 2, 3)).all() and not seen[-1][3:].any()
    # by default, a chunk holds at most DEFAULT_CHUNK_BYTES of masked inputs
    monkeypatch.setattr(scorecam, "DEFAULT_CHUNK_BYTES", 4 * docs[0].nbytes)
    np.testing.assert_allclose(run(), scores, rtol=1e-6)
    assert [len(s) for s in seen] == [4, 4, 4, 4, 4]


@pytest.mark.backend_agnostic
def test_scorecam_chunks_are_even_and_bounded():
    for total in range(1, 300):
        for limit in (1, 5, 7, 32, 64, 100):
            size = scorecam.chunk_size(total, 1, batch_size=limit)
            chunks = -(-total // size)
            assert size <= limit and chunks == -(-total // limit)  # the fewest chunks
            assert chunks * size - total < chunks  # less than one padding row per chunk
    assert scorecam.chunk_size(512, 224 * 224 * 3 * 4) == 3  # 2 MiB: 171 chunks


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="gradcam+"), ValueError, r"method must be one of .*'scorecam'.*received "
                                          r"method='gradcam\+'"),
    (dict(method=3), TypeError, r"method must be a method name \(str\).*received int: 3"),
    (dict(method="scorecam", max_channels=0), ValueError,
     r"max_channels must be a positive integer or None; received 0"),
    (dict(method="gradcam", max_channels=8), ValueError,
     r"max_channels applies to method='scorecam' only; received max_channels=8 with "
     r"method='gradcam'"),
    (dict(method="scorecam", batch_size=True), ValueError,
     r"batch_size must be a positive integer or None; received True"),
])
def test_bad_method_options_are_refused_before_any_pass(kwargs, error, message):
    model = spatial_cnn(0)
    docs = images(1, (12, 12, 3))
    before = backends.compilations(), backends.passes_run()
    with pytest.raises(error, match=message):
        gc.explain_predictions(model, docs, layer="feat", **kwargs)
    with pytest.raises(error, match=message):
        gc.explain_prediction(model, docs, layer="feat", **kwargs)
    # no pass built, traced or run (passes_run sees an eager PyTorch pass, traces do not)
    assert (backends.compilations(), backends.passes_run()) == before


# ---------------------------------------------------------------- properties (numpy only)

SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 5), st.integers(1, 5),
                   st.integers(1, 6))
VALUES = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


@st.composite
def activations_and_grads(draw):
    n, k, h, w, c = draw(SHAPES)
    activations = draw(arrays(np.float64, (n, h, w, c),
                              elements=st.floats(0, 10, **VALUES)))  # post-ReLU layers
    grads = draw(arrays(np.float64, (n, k, h, w, c), elements=st.floats(-10, 10, **VALUES)))
    return activations, grads


def _raw_maps(method, activations, grads):
    inputs = CamInputs(activations, grads, np.zeros((len(grads), 1, 1, 1)),
                       np.zeros(grads.shape[:2], int), "channels_last", None, 1)
    return methods.get_method(method).compute(inputs).maps


@pytest.mark.backend_agnostic
@settings(max_examples=60, deadline=None)
@given(activations_and_grads(), st.sampled_from(GRADIENT_METHODS))
def test_maps_are_finite_in_unit_range_and_keep_the_shape(pair, method):
    activations, grads = pair
    maps = methods.heatmaps(method, activations, grads)
    assert maps.shape == grads.shape[:-1]
    assert np.isfinite(maps).all() and (maps >= 0).all() and (maps <= 1).all()


@pytest.mark.backend_agnostic
@settings(max_examples=30, deadline=None)
@given(activations_and_grads(), st.integers(1, 8), st.integers(1, 20))
def test_scorecam_maps_are_finite_in_unit_range_and_keep_the_shape(pair, max_channels, batch):
    activations, grads = pair
    n, k = grads.shape[:2]
    docs = np.linspace(0, 1, n * 6 * 6 * 2).reshape(n, 6, 6, 2)
    head = np.linspace(-3, 3, 2 * 4).reshape(2, 4)
    inputs = CamInputs(activations, grads, docs, np.arange(n * k).reshape(n, k) % 4,
                       "channels_last", lambda x: x.mean(axis=(1, 2)) @ head, batch)
    maps, weights = methods.apply(methods.ScoreCAM(max_channels=max_channels), inputs)
    assert maps.shape == grads.shape[:-1]
    assert np.isfinite(maps).all() and (maps >= 0).all() and (maps <= 1).all()
    assert ((weights > 0).sum(-1) == min(max_channels, activations.shape[-1])).all()


@pytest.mark.backend_agnostic
@settings(max_examples=60, deadline=None)
@given(activations_and_grads(), st.floats(0.1, 100), st.sampled_from(SCALE_FREE))
def test_scaling_the_gradient_leaves_the_map_unchanged(pair, scale, method):
    activations, grads = pair
    for g in (grads, grads * scale):  # else 1e-7 in the normalisation is not negligible
        assume(_raw_maps(method, activations, g).max(axis=(-2, -1)).min() > 0.1)
    np.testing.assert_allclose(methods.heatmaps(method, activations, grads * scale),
                               methods.heatmaps(method, activations, grads), atol=1e-5)


@pytest.mark.backend_agnostic
def test_gradcam_plus_plus_depends_on_the_gradients_scale():
    # Eq. 19's G^3 term is not homogeneous with G^2: the issue's scale-invariance property
    # cannot hold for Grad-CAM++ (pytorch-grad-cam computes the same).
    activations = np.zeros((1, 1, 2, 2))
    activations[0, 0] = [1.0, 0.0]
    activations[0, 0, 1] = [0.0, 3.0]
    grads = np.ones((1, 1, 1, 2, 2))
    first = methods.heatmaps("gradcam++", activations, grads)
    scaled = methods.heatmaps("gradcam++", activations, 10 * grads)
    assert abs(first[0, 0, 0, 0] - scaled[0, 0, 0, 0]) > 0.1
