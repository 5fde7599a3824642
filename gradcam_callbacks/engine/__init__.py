"""The engine: one plan per model (:func:`plan`), one entry that runs a list of methods over
one compiled pass (:meth:`Plan.run`), and its raw results (:class:`RawExplanation`).

- ``checks.py``: what is checked of a model and its inputs (the model, the explained output,
  the docs, score functions against the model's symbolic output);
- ``plan.py``: :class:`Plan` (the layer, the output, the token layout, the automatic method)
  and :meth:`Plan.run`;
- ``raw.py``: :class:`RawExplanation` and :class:`NonFiniteError`.

The engine sits below everything that explains (:mod:`gradcam_callbacks.explain`, the
callback, the command line, the faithfulness checks) and above the methods, the backends and
the model facts (``layers``, ``targets``); it imports none of the callers.

Example:
    >>> from gradcam_callbacks.engine import plan
    >>> pass_plan = plan(model)
    >>> [raw] = pass_plan.run(docs, pass_plan.targets(None, len(docs)))
    >>> raw.heatmaps.shape
    (4, 1, 12, 12)
"""

from __future__ import annotations

from .checks import check_docs, check_model, resolve_output
from .plan import Plan, ReshapeSpec, TargetsSpec, check_reshape, plan
from .raw import NonFiniteError, RawExplanation

__all__ = ["NonFiniteError", "Plan", "RawExplanation", "ReshapeSpec", "TargetsSpec",
           "check_docs", "check_model", "check_reshape", "plan", "resolve_output"]
