"""The running backend's module satisfies the backend contract written once as
``backends.Backend``: the same functions with the same parameters."""

from __future__ import annotations

import inspect

from gradcam_callbacks import backends


def test_backend_module_satisfies_the_protocol():
    module = backends.backend_module()
    assert isinstance(module, backends.Backend)
    for name in ("build", "build_score", "process_index_and_count"):
        wanted = list(inspect.signature(getattr(backends.Backend, name)).parameters)[1:]
        assert list(inspect.signature(getattr(module, name)).parameters) == wanted, name
