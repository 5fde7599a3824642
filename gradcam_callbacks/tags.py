"""The TensorBoard tag names and steps :class:`GradCamCallback` writes, defined once.

The callback writes them and :mod:`gradcam_callbacks.sheet` reads them back, so both import
them from here. Steps follow ``keras.callbacks.TensorBoard``: the maps after epoch ``e``
(0-based) are at step ``e``, where Keras writes that epoch's ``epoch_loss``; the untrained
model's maps are at step ``INITIAL_STEP`` (-1), one before the first epoch.

Example:
    >>> probe_tag(3), probe_scalar_tag(3, "score"), timeline_tag(3)
    ('gradcam/probe_03', 'gradcam/probe_03/score', 'gradcam/timeline/probe_03')
    >>> step_label(INITIAL_STEP), step_label(4)
    ('untrained', 'epoch 5')
"""

from __future__ import annotations

__all__ = [
    "GRID",
    "INITIAL_STEP",
    "MEAN_BOX_MASS",
    "MEAN_CHANGE",
    "NONFINITE",
    "POINTING_GAME",
    "PROBE_PREFIX",
    "SAMPLES_PER_PLUGIN",
    "TIMELINE_PREFIX",
    "probe_scalar_tag",
    "probe_tag",
    "step_label",
    "timeline_tag",
]

PROBE_PREFIX = "gradcam/probe_"
"""Per-probe images: ``gradcam/probe_00`` (input and overlay), one per logged step."""
TIMELINE_PREFIX = "gradcam/timeline/probe_"
"""Per-probe timelines: the probe's overlays over all logged steps so far, in one image."""
GRID = "gradcam/grid"
"""All probes' overlays at one step."""
MEAN_CHANGE = "gradcam/mean_change"
MEAN_BOX_MASS = "gradcam/mean_box_mass"
"""Mean over probes of ``box_mass``: heatmap mass on the object, whether the object is given
as a box (``probe_boxes``) or as a mask (``probe_masks``); the name is the boxes' one."""
POINTING_GAME = "gradcam/pointing_game"
NONFINITE = "gradcam/nonfinite"
"""How many probes had a NaN or infinite heatmap or score at a step (a diverging model)."""

SAMPLES_PER_PLUGIN = "images=1000"
"""The ``tensorboard --samples_per_plugin`` value that makes TensorBoard keep every step of
every image tag, for runs of up to 1000 logged epochs. Its default keeps 10 per tag (chosen
at random but always the latest); ``images=0``, documented upstream as "keep all", served no
image at all with TensorBoard 2.21."""

INITIAL_STEP = -1
"""The step of the untrained model's maps: before epoch 0, whose maps are at step 0."""


def probe_tag(index: int) -> str:
    """The image tag of probe ``index``.

    Example:
        >>> probe_tag(0)
        'gradcam/probe_00'
    """
    return f"{PROBE_PREFIX}{index:02d}"


def probe_scalar_tag(index: int, name: str) -> str:
    """A scalar tag of probe ``index``: ``score``, ``change``, ``box_mass``, ``pointing_hit``.

    ``box_mass`` is the share of the heatmap's mass on the object, which is a box
    (``probe_boxes``) or a mask (``probe_masks``): with masks it is the mass on the mask.

    Example:
        >>> probe_scalar_tag(1, "change")
        'gradcam/probe_01/change'
    """
    return f"{probe_tag(index)}/{name}"


def timeline_tag(index: int) -> str:
    """The timeline image tag of probe ``index``.

    Example:
        >>> timeline_tag(12)
        'gradcam/timeline/probe_12'
    """
    return f"{TIMELINE_PREFIX}{index:02d}"


def step_label(step: int) -> str:
    """A step as people count epochs: ``untrained``, then ``epoch 1`` for step 0 (the model
    after its first epoch), as ``fit`` prints ``Epoch 1/N``.

    Example:
        >>> [step_label(s) for s in (-1, 0, 9)]
        ['untrained', 'epoch 1', 'epoch 10']
    """
    return "untrained" if step == INITIAL_STEP else f"epoch {step + 1}"
