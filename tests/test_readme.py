"""Every Python block of the README and of the documentation pages (``docs/*.md``) runs as
written.

Each ```python block runs in a fresh interpreter in an empty folder (files it writes, such as
``logs/``, land there), with a time budget. A block that sets ``os.environ["KERAS_BACKEND"]``
runs in the pytest session of that backend only; the others run under every backend. Blocks
meant for several processes run through the launcher their first comment names:
``# Run: python NAME.py 0 & python NAME.py 1`` (two processes) or ``# torchrun ... NAME.py``.

A ``print(...)`` line with a comment promises what it prints: ``print(expl.method)  # Score-CAM``
must print a line that is the comment's text (``...`` there stands for any text), in the order
of the block's prints. A comment that describes rather than shows goes on its own line.

docs/keras2.md's block also runs as that page says it runs on TensorFlow <= 2.15 (``from
tensorflow import keras as tf_keras``), in the Keras 2 environments (marker ``keras2``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BACKEND

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BUDGET_S = 300


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[: match.start()].count("\n") + 1, match.group(1)))
    return blocks


BLOCKS = [(f"{page.relative_to(ROOT)}:{line}", code)
          for page in PAGES for line, code in python_blocks(page.read_text())]


def test_the_documentation_has_python_blocks():
    assert len(BLOCKS) >= 7, [where for where, _ in BLOCKS]


PRINT_WITH_COMMENT = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$")


def promises(code: str) -> list[str]:
    """The outputs the block's ``print(...)  # OUTPUT`` lines promise, in order."""
    return [m.group(1) for line in code.splitlines()
            if (m := PRINT_WITH_COMMENT.match(line))]


def check_promises(where: str, code: str, output: str) -> None:
    """Each promise is a whole line of ``output``, after the previous promise's line."""
    lines = [line.strip() for line in output.splitlines()]
    start = 0
    for promise in promises(code):
        pattern = re.compile(".*".join(re.escape(part) for part in promise.split("...")))
        found = next((i for i in range(start, len(lines)) if pattern.fullmatch(lines[i])), None)
        assert found is not None, (
            f"{where}: no printed line is {promise!r} (promised by its comment); printed, "
            f"after the promises before it:\n" + "\n".join(lines[start:])[-4000:])
        start = found + 1


def test_the_documentation_promises_printed_values():
    """The promise parser finds the promises this file is meant to hold (a parser that found
    none would check nothing)."""
    found = {(where.split(":")[0], promise) for where, code in BLOCKS
             for promise in promises(code)}
    assert {("docs/methods.md", "Score-CAM (3, 3)"), ("docs/keras2.md", "features (30, 30)"),
            ("docs/explaining.md", "(12, 12) last_conv")} <= found, found
    assert len(found) >= 8, found


def _backend_of(code: str) -> str | None:
    found = re.search(r"""os\.environ\[["']KERAS_BACKEND["']\]\s*=\s*["'](\w+)["']""", code)
    return found.group(1) if found else None


def _commands(code: str, path: Path) -> list[list[str]]:
    """How the block is launched: one command per process."""
    first = code.lstrip().splitlines()[0]
    if re.match(r"#\s*Run: python \S+\.py 0 & python \S+\.py 1", first):
        return [[sys.executable, str(path), "0"], [sys.executable, str(path), "1"]]
    if re.match(r"#\s*torchrun\b", first):
        return [[sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node=2", str(path)]]
    return [[sys.executable, str(path)]]


def run_block(code: str, tmp_path: Path) -> list[tuple[int, str]]:
    """Run the block as its page says; ``(exit status, output)`` per process."""
    match = re.search(r"(\w+)\.py", code.lstrip().splitlines()[0])
    path = tmp_path / (f"{match.group(1)}.py" if match else "block.py")
    path.write_text(code)
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)  # users run JAX with its default settings
    if "xla_force_host_platform_device_count" in code or "DataParallel()" in code:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    processes = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for command in _commands(code, path)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=BUDGET_S)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [(process.returncode, output) for process, output in zip(processes, outputs)]


@pytest.mark.parametrize("where,code", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_documented_block_runs_as_written(where, code, tmp_path):
    wanted = _backend_of(code)
    if wanted is not None and wanted != BACKEND:
        pytest.skip(f"the block at {where} is for the {wanted} backend")
    results = run_block(code, tmp_path)
    for status, output in results:
        assert status == 0, f"{where} failed:\n{output[-4000:]}"
    check_promises(where, code, "\n".join(output for _, output in results))


KERAS2_VARIANT = ("On TensorFlow <= 2.15 the same code runs with "
                  "`from tensorflow import keras as tf_keras`.")


@pytest.mark.keras2
def test_keras2_block_runs_as_the_page_says_for_tensorflow_2_15(tmp_path):
    page = ROOT / "docs" / "keras2.md"
    assert KERAS2_VARIANT in " ".join(page.read_text().split()), "the page no longer says it"
    (code,) = [code for _, code in python_blocks(page.read_text()) if "import tf_keras" in code]
    variant = re.sub(r"^import tf_keras\b.*$", "from tensorflow import keras as tf_keras",
                     code, count=1, flags=re.M)
    assert variant != code
    # Keras 2 models are classes of its ``engine`` package (Keras 3: ``keras.src.models``)
    variant += "\nprint('variant model class:', type(model).__module__)\n"
    ((status, output),) = run_block(variant, tmp_path)
    assert status == 0, f"docs/keras2.md's block, TensorFlow <= 2.15 variant:\n{output[-4000:]}"
    module = re.search(r"^variant model class: (\S+)$", output, flags=re.M).group(1)
    if ".engine." not in module:
        reason = f"tensorflow.keras made a {module} model here, not a Keras 2 one"
        if os.environ.get("GRADCAM_REQUIRE_KERAS2"):
            pytest.fail(f"GRADCAM_REQUIRE_KERAS2 is set, but {reason}")
        pytest.skip(reason)
    check_promises("docs/keras2.md (TensorFlow <= 2.15 variant)", variant, output)
