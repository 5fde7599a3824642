"""Watching a model train: :class:`~gradcam_callbacks.watch.callback.GradCamCallback` and what
it is made of — probe checks (``probes``), drawing and measuring (``report``, ``metrics``),
where numbers go (``sinks``, ``tensorboard``, ``tags``, ``logdirs``), the shortcut alarm
(``alarm``), which process writes (``distribute``) and contact sheets of a run (``sheet``).

Everything here sits above the engine: it explains through
:mod:`gradcam_callbacks.explain` and the engine, never the reverse.
"""
