"""Keep the frameworks' native start-up chatter out of the command line's stderr.

TensorFlow's C++ code writes lines such as "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR" and "I0000 ... oneDNN custom
operations are on ..." straight to file descriptor 2 while it is imported; in TensorFlow 2.21
``TF_CPP_MIN_LOG_LEVEL`` does not silence them (they come before absl's logging starts). A
user of ``gradcam-callbacks`` should see the tool's own lines only, so the import of Keras
(and so of its backend) runs with descriptor 2 captured; the native log lines are dropped and
everything else is passed on. A user who set ``TF_CPP_MIN_LOG_LEVEL`` chose what to see: then
nothing is captured.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# glog/absl lines (severity INFO or WARNING: "I0000 00:00:1796436623.168332    9842
# port.cc:153] ..."), absl's own notice, and the continuation of cpu_feature_guard's line.
# ERROR and FATAL lines are kept.
_NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow "
    r"with the appropriate compiler flags\.)$")


def native_noise(line: str) -> bool:
    """Whether ``line`` is one of the frameworks' native start-up log lines.

    Example:
        >>> native_noise("I0000 00:00:1796436623.168332    9842 port.cc:153] oneDNN custom "
        ...              "operations are on.")
        True
        >>> native_noise("gradcam-callbacks explain: error: no input")
        False
    """
    return bool(_NATIVE_NOISE.match(line))


@contextmanager
def quiet_native_startup(environ: dict[str, str] | os._Environ = os.environ) -> Iterator[None]:
    """Run the body (an import of Keras and its backend) with file descriptor 2 captured,
    then write what it printed back to stderr without the native log lines.

    Does nothing when ``TF_CPP_MIN_LOG_LEVEL`` is set in ``environ``; otherwise also sets it
    to ``"2"``, which silences TensorFlow's later INFO and WARNING lines.

    Example:
        >>> with quiet_native_startup():  # doctest: +SKIP
        ...     import keras
    """
    if "TF_CPP_MIN_LOG_LEVEL" in environ:
        yield
        return
    environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines()
                    if not native_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
