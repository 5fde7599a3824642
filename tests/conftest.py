"""Shared fixtures. The Keras backend is chosen by KERAS_BACKEND before this file is
imported (scripts/run_tests.py runs the suite once per backend)."""

from __future__ import annotations

import os
import sys

import keras
import pytest

sys.path.insert(0, os.path.dirname(__file__))

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


@pytest.fixture(autouse=True)
def _keep_global_keras_state():
    """Every test starts and ends with the default dtype policy."""
    config = getattr(keras, "config", None)  # Keras 2.15 (TensorFlow <= 2.15) has none
    if config is None:
        yield
        return
    before = config.dtype_policy().name
    yield
    config.set_dtype_policy(before)
