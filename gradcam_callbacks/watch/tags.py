"""The TensorBoard tag names and steps :class:`GradCamCallback` writes, defined once.

The callback writes them and :mod:`gradcam_callbacks.watch.sheet` reads them back, so both import
them from here. Steps follow ``keras.callbacks.TensorBoard``: the maps after epoch ``e``
(0-based) are at step ``e``, where Keras writes that epoch's ``epoch_loss``; the untrained
model's maps are at step ``INITIAL_STEP`` (-1), one before the first epoch.

With several CAM methods (``GradCamCallback(method=[...])``) the first method keeps these
plain tags, so dashboards and ``gradcam-callbacks sheet`` read it as a single-method run, and
every further method writes the same images and scalars under its own section,
``gradcam/<method>/...`` (:func:`section`): ``gradcam/gradcam++/probe_00``,
``gradcam/gradcam++/timeline/probe_00``, ``gradcam/gradcam++/grid``,
``gradcam/gradcam++/probe_00/score``, ``gradcam/gradcam++/pointing_game``.

With ``GradCamCallback(faithfulness=True)`` the first method's maps are also scored for
faithfulness (:mod:`gradcam_callbacks.faithfulness`): the means over probes at
``gradcam/faithfulness/<metric>`` (:func:`faithfulness_tag`), each probe's at
``gradcam/probe_00/faithfulness/<metric>``, and the means in the epoch's Keras ``logs`` as
``gradcam_faithfulness_<metric>`` (:func:`log_faithfulness_key`).

Example:
    >>> probe_tag(3), probe_scalar_tag(3, "score"), timeline_tag(3)
    ('gradcam/probe_03', 'gradcam/probe_03/score', 'gradcam/timeline/probe_03')
    >>> step_label(INITIAL_STEP), step_label(4)
    ('untrained', 'epoch 5')
"""

from __future__ import annotations

__all__ = [
    "GRID",
    "ROOT",
    "FAITHFULNESS",
    "INITIAL_STEP",
    "LOG_ARTIFACT_MASS",
    "LOG_BOX_MASS",
    "LOG_FAITHFULNESS_DELETION",
    "LOG_FAITHFULNESS_INSERTION",
    "LOG_MEAN_CHANGE",
    "LOG_POINTING_GAME",
    "MEAN_ARTIFACT_MASS",
    "MEAN_BOX_MASS",
    "MEAN_CHANGE",
    "NONFINITE",
    "OPTIMIZER_STEPS",
    "POINTING_GAME",
    "PROBE_PREFIX",
    "faithfulness_tag",
    "log_faithfulness_key",
    "SAMPLES_PER_PLUGIN",
    "TIMELINE_PREFIX",
    "probe_scalar_tag",
    "probe_tag",
    "section",
    "section_tag",
    "step_label",
    "timeline_tag",
]

ROOT = "gradcam"
"""The first component of every tag: TensorBoard groups the tags by it."""
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
MEAN_ARTIFACT_MASS = "gradcam/mean_artifact_mass"
"""Mean over probes of ``artifact_mass``: heatmap mass on the spurious cue given as
``artifact_boxes`` or ``artifact_masks`` (a watermark, a ruler, a marker)."""

LOG_POINTING_GAME = "gradcam_pointing_game"
"""The key of the mean pointing game in the epoch's Keras ``logs`` (``History``,
``CSVLogger``, ``EarlyStopping(monitor=...)``), as :data:`POINTING_GAME` in TensorBoard."""
LOG_BOX_MASS = "gradcam_box_mass"
"""The ``logs`` key of :data:`MEAN_BOX_MASS` (needs ``probe_boxes`` or ``probe_masks``)."""
LOG_ARTIFACT_MASS = "gradcam_artifact_mass"
"""The ``logs`` key of :data:`MEAN_ARTIFACT_MASS` (needs ``artifact_boxes`` or
``artifact_masks``)."""
LOG_MEAN_CHANGE = "gradcam_mean_change"
"""The ``logs`` key of :data:`MEAN_CHANGE`."""
FAITHFULNESS = "gradcam/faithfulness"
"""The section of the faithfulness scalars' means over probes (``faithfulness=``):
``gradcam/faithfulness/insertion``, ``gradcam/faithfulness/deletion``,
``gradcam/faithfulness/road``; see :func:`faithfulness_tag`."""
LOG_FAITHFULNESS_INSERTION = "gradcam_faithfulness_insertion"
"""The ``logs`` key of the mean insertion area (``faithfulness=True``; higher is better)."""
LOG_FAITHFULNESS_DELETION = "gradcam_faithfulness_deletion"
"""The ``logs`` key of the mean deletion area (``faithfulness=True``; lower is better)."""
NONFINITE = "gradcam/nonfinite"
"""How many probes had a NaN or infinite heatmap or score at a step (a diverging model)."""

SAMPLES_PER_PLUGIN = "images=1000"
"""The ``tensorboard --samples_per_plugin`` value that makes TensorBoard keep every step of
every image tag, for runs of up to 1000 logged epochs. Its default keeps 10 per tag (chosen
at random but always the latest); ``images=0``, documented upstream as "keep all", served no
image at all with TensorBoard 2.21."""

INITIAL_STEP = -1
"""The step of the maps before the first epoch of a fit (``log_initial``), whose maps are at
step 0."""
OPTIMIZER_STEPS = "gradcam/optimizer_steps"
"""The optimizer's step count when a step's maps were taken: 0 at step -1 of an untrained
model. ``gradcam-callbacks sheet`` reads it to label step -1 ``untrained`` or ``before fit``."""


def section(method: str | None = None) -> str:
    """The tag prefix of a method's images and scalars: ``gradcam`` for the first (or only)
    method (``method=None``), ``gradcam/<method>`` for each further one.

    Example:
        >>> section(), section("layercam")
        ('gradcam', 'gradcam/layercam')
    """
    return ROOT if method is None else f"{ROOT}/{method}"


def section_tag(name: str, method: str | None = None) -> str:
    """A step-wide tag of ``method``'s section: ``grid``, ``mean_change``,
    ``mean_box_mass``, ``mean_artifact_mass``, ``pointing_game``, ``nonfinite``.

    Example:
        >>> section_tag("grid"), section_tag("pointing_game", "gradcam++")
        ('gradcam/grid', 'gradcam/gradcam++/pointing_game')
    """
    return f"{section(method)}/{name}"


def probe_tag(index: int, method: str | None = None) -> str:
    """The image tag of probe ``index`` (in ``method``'s section, see :func:`section`).

    Example:
        >>> probe_tag(0), probe_tag(0, "layercam")
        ('gradcam/probe_00', 'gradcam/layercam/probe_00')
    """
    return f"{section(method)}/probe_{index:02d}"


def probe_scalar_tag(index: int, name: str, method: str | None = None) -> str:
    """A scalar tag of probe ``index``: ``score``, ``change``, ``box_mass``, ``pointing_hit``,
    ``artifact_mass``.

    ``box_mass`` is the share of the heatmap's mass on the object, which is a box
    (``probe_boxes``) or a mask (``probe_masks``): with masks it is the mass on the mask.

    Example:
        >>> probe_scalar_tag(1, "change")
        'gradcam/probe_01/change'
    """
    return f"{probe_tag(index, method)}/{name}"


def faithfulness_tag(metric: str, index: int | None = None) -> str:
    """The scalar tag of a faithfulness metric (``insertion``, ``deletion``, ``road``): its
    mean over probes (``index=None``), or probe ``index``'s value, a scalar of the probe as
    :func:`probe_scalar_tag` names them. Only the first CAM method is scored, so these tags
    have no method section.

    Example:
        >>> faithfulness_tag("insertion"), faithfulness_tag("deletion", 2)
        ('gradcam/faithfulness/insertion', 'gradcam/probe_02/faithfulness/deletion')
    """
    if index is None:
        return f"{FAITHFULNESS}/{metric}"
    return probe_scalar_tag(index, f"faithfulness/{metric}")


def log_faithfulness_key(metric: str) -> str:
    """The Keras ``logs`` key of a faithfulness metric's mean over probes.

    Example:
        >>> log_faithfulness_key("deletion") == LOG_FAITHFULNESS_DELETION
        True
    """
    return f"gradcam_faithfulness_{metric}"


def timeline_tag(index: int, method: str | None = None) -> str:
    """The timeline image tag of probe ``index``.

    Example:
        >>> timeline_tag(12), timeline_tag(0, "eigencam")
        ('gradcam/timeline/probe_12', 'gradcam/eigencam/timeline/probe_00')
    """
    return f"{section(method)}/timeline/probe_{index:02d}"


def step_label(step: int, untrained: bool = True) -> str:
    """A step as people count epochs: ``epoch 1`` for step 0 (the model after its first
    epoch), as ``fit`` prints ``Epoch 1/N``. Step -1 is ``untrained`` when the model's
    optimizer had taken no step when the maps were taken (``untrained=True``), else
    ``before fit`` (a second fit, a trained model fitted again).

    Example:
        >>> [step_label(s) for s in (-1, 0, 9)], step_label(-1, untrained=False)
        (['untrained', 'epoch 1', 'epoch 10'], 'before fit')
    """
    if step == INITIAL_STEP:
        return "untrained" if untrained else "before fit"
    return f"epoch {step + 1}"
