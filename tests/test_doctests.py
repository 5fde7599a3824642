"""Every ``>>>`` example in the package's docstrings runs, and prints what it says, under the
Keras backend of this process (scripts/run_tests.py runs this file under TensorFlow, JAX and
PyTorch; not in the Keras 2 runs).

Examples use the names a reader has at hand: ``vit`` (a small keras_hub ViT,
tests/transformers_reference.py), ``model`` (the demo's trained CNN,
:func:`gradcam_callbacks.demo.pretrained`: 48x48x1 digits, 10 classes, last conv layer
``last_conv`` at 12x12), ``x``/``x_val``/``x_test`` and ``y``/``y_val`` (16 held-out digits and
their labels), ``boxes`` (their digits' boxes), ``doc`` (``x[:1]``), ``docs`` (``x[:4]``),
``names`` (the ten digits' names), ``layer`` (``last_conv``), ``diverged_model`` (``model``
with NaN weights), ``explanation`` (``explain_prediction(model, doc)``) and ``options`` (the
command line's settings for ``model``). Each example runs in a working directory that holds
``photos/`` (two digit pictures in ``cats/`` and ``dogs/``), ``cat.jpg``, ``model.keras``
(``model``, saved) and ``logs/gradcam`` (a real ``GradCamCallback`` run: two probes, steps -1
and 0). Everything is built on first use, once per session; an example that trains
(``.fit(``, ``train(``) gets ``model``'s copy that only those examples use.

``# doctest: +SKIP`` stays only on lines that cannot run here: each says why in a comment next
to it. Modules that import a framework (``backends/tf_backend.py``, ...) are imported only
under their own backend.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import gradcam_callbacks

BACKEND = keras.backend.backend()

# Modules that import a framework at import time: collected only under that backend (under
# another one, importing them would load a second framework into the process).
FRAMEWORK_MODULES = {
    "gradcam_callbacks.backends.tf_backend": "tensorflow",
    "gradcam_callbacks.backends.keras2_backend": "tensorflow",
    "gradcam_callbacks.backends.jax_backend": "jax",
    "gradcam_callbacks.backends.torch_backend": "torch",
}
# Docstrings that read a framework loaded by someone else: run under that backend only.
FRAMEWORK_DOCSTRINGS = {
    # tensorflow_ops() reads TensorFlow from sys.modules (it never imports it): only the
    # TensorFlow run has it loaded.
    "gradcam_callbacks.keras_family.tensorflow_ops": "tensorflow",
}


def _module_names() -> list[str]:
    found = [gradcam_callbacks.__name__]
    found += [info.name for info in pkgutil.walk_packages(gradcam_callbacks.__path__,
                                                          gradcam_callbacks.__name__ + ".")]
    return sorted(found)


def _collect() -> list[Any]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    params = []
    for name in _module_names():
        framework = FRAMEWORK_MODULES.get(name)
        if framework is not None and framework != BACKEND:
            params.append(pytest.param(name, None, id=name, marks=pytest.mark.skip(
                reason=f"imports {framework} at import time; its examples run under the "
                       f"{framework} backend")))
            continue
        module = importlib.import_module(name)
        for test in sorted(finder.find(module, name), key=lambda t: t.name):
            if not test.examples:
                continue
            marks = []
            framework = FRAMEWORK_DOCSTRINGS.get(test.name)
            if framework is not None and framework != BACKEND:
                marks.append(pytest.mark.skip(reason=f"reads {framework}, loaded only by the "
                                                     f"{framework} backend"))
            params.append(pytest.param(name, test.name, id=test.name, marks=marks))
    return params


class Workspace:
    """The names and files the examples use, each made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._made: dict[str, Any] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def data(self) -> Any:
        from gradcam_callbacks.demo import load_data

        return self._once("data", lambda: load_data(num_train=1, num_test=16)[1])

    def model(self) -> keras.Model:
        from gradcam_callbacks.demo import pretrained

        return self._once("model", pretrained)

    def trainee(self) -> keras.Model:
        """``model``'s copy for the examples that train (one, so its train step compiles
        once)."""
        from gradcam_callbacks.demo import pretrained

        return self._once("trainee", pretrained)

    def diverged_model(self) -> keras.Model:
        def make() -> keras.Model:
            from gradcam_callbacks.demo import pretrained

            broken = pretrained()
            broken.set_weights([np.full_like(w, np.nan) for w in broken.get_weights()])
            return broken

        return self._once("diverged_model", make)

    def vit(self) -> keras.Model:
        """A small keras_hub ViT classifier (16x16x3, 4x4 patches, 2 blocks; needs keras_hub,
        which scripts/run_tests.py installs)."""
        from transformers_reference import build

        return self._once("vit", lambda: build("vit"))

    def options(self) -> Any:
        def make() -> Any:
            from PIL import Image

            from gradcam_callbacks.cli.images import Geometry
            from gradcam_callbacks.cli.pipeline import ExplainOptions
            from gradcam_callbacks.explain import plan
            from gradcam_callbacks.image import get_colormap

            return ExplainOptions(
                model=self.model(), plan=plan(self.model()), geometry=Geometry(1, 48, 48, False),
                targets=None, top=None, class_names=None, preprocess="unit",
                colormap=get_colormap("jet"), alpha_limit=None, side_by_side=False,
                max_pixels=Image.MAX_IMAGE_PIXELS)

        return self._once("options", make)

    def explanation(self) -> Any:
        from gradcam_callbacks import explain_prediction

        return self._once("explanation",
                          lambda: explain_prediction(self.model(), self.data().x[:1]))

    def names(self) -> dict[str, Any]:
        """The names ``source`` may use, made on demand."""
        data = self.data
        return {
            "model": self.model,
            "diverged_model": self.diverged_model,
            "x": lambda: data().x, "x_val": lambda: data().x, "x_test": lambda: data().x,
            "y": lambda: data().y, "y_val": lambda: data().y,
            "boxes": lambda: data().boxes,
            "doc": lambda: data().x[:1], "docs": lambda: data().x[:4],
            "names": lambda: ["zero", "one", "two", "three", "four", "five", "six", "seven",
                              "eight", "nine"],
            "layer": lambda: self.model().get_layer("last_conv"),
            "options": self.options,
            "explanation": self.explanation,
            "vit": self.vit,
        }

    def files(self, source: str) -> None:
        """The files ``source`` names, written once into the working directory."""
        from PIL import Image

        x = self.data().x
        if "photos" in source:
            def photos() -> None:
                for folder, name, index in (("cats", "a.jpg", 0), ("dogs", "b.png", 1)):
                    (self.root / "photos" / folder).mkdir(parents=True, exist_ok=True)
                    picture = Image.fromarray((x[index, ..., 0] * 255).astype(np.uint8), "L")
                    picture.save(self.root / "photos" / folder / name)

            self._once("photos", photos)
        if "cat.jpg" in source:
            self._once("cat.jpg", lambda: Image.new("RGB", (40, 30), (200, 120, 40)).save(
                self.root / "cat.jpg"))
        if "model.keras" in source:
            self._once("model.keras", lambda: self.model().save(self.root / "model.keras"))
        if "logs/gradcam" in source:
            def run() -> None:
                from gradcam_callbacks import GradCamCallback

                cam = GradCamCallback(x[:2], log_dir=str(self.root / "logs" / "gradcam"))
                self.trainee().fit(x[:8], self.data().y[:8], epochs=1, verbose=0, callbacks=[cam])

            self._once("logs/gradcam", run)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("doctest-workspace"))


def _uses(source: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}\b", source) is not None


@pytest.mark.parametrize(("module_name", "test_name"), _collect())
def test_docstring_examples(module_name, test_name, workspace, monkeypatch):
    module = importlib.import_module(module_name)
    (test,) = [t for t in doctest.DocTestFinder().find(module, module_name)
               if t.name == test_name]
    source = "".join(example.source for example in test.examples
                     if not example.options.get(doctest.SKIP))
    trains = ".fit(" in source or "train(" in source
    for name, make in workspace.names().items():
        if name in test.globs or not _uses(source, name):
            continue  # the module's own name, or unused
        if name == "model" and trains:
            test.globs[name] = workspace.trainee()
        else:
            test.globs[name] = make()
    workspace.files(source)
    monkeypatch.chdir(workspace.root)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_every_module_is_collected():
    """A module the walk misses would silently lose its examples."""
    files = {str(p.relative_to(Path(gradcam_callbacks.__file__).parent.parent))
             for p in Path(gradcam_callbacks.__file__).parent.rglob("*.py")}
    modules = {name.replace(".", os.sep) + ".py" for name in _module_names()}
    modules |= {name.replace(".", os.sep) + os.sep + "__init__.py" for name in _module_names()}
    assert files <= modules, sorted(files - modules)
