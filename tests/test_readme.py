"""Every Python block of the README and of the documentation pages (``docs/*.md``) runs as
written.

Each ```python block runs in a fresh interpreter in an empty folder (files it writes, such as
``logs/``, land there), with a time budget. A block that sets ``os.environ["KERAS_BACKEND"]``
runs in the pytest session of that backend only; the others run under every backend. Blocks
meant for several processes run through the launcher their first comment names:
``# Run: python NAME.py 0 & python NAME.py 1`` (two processes) or ``# torchrun ... NAME.py``.
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


@pytest.mark.parametrize("where,code", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_documented_block_runs_as_written(where, code, tmp_path):
    wanted = _backend_of(code)
    if wanted is not None and wanted != BACKEND:
        pytest.skip(f"the block at {where} is for the {wanted} backend")
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
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, f"{where} failed:\n{output[-4000:]}"
