"""Launch worker scripts as bounded subprocesses and read back what they recorded.

Each worker runs in its own session (process group); whatever happens, every group this
module started is killed before :func:`run_workers` returns, so a hung collective can never
outlive its test. Servers and coordinators bind to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent

# A peer that fails leaves the others waiting in a collective; give them this long to notice.
_GRACE_S = 20.0


@dataclass
class Worker:
    """One finished (or killed) worker process."""

    index: int
    returncode: int  # negative: ended by that signal
    killed: bool  # still running at the deadline (or after a peer failed), so killed here
    output: str
    out_dir: Path

    def result(self) -> dict[str, Any]:
        """The JSON the worker wrote with :func:`write_result` (``{}`` if none)."""
        path = self.out_dir / "result.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the worker saved with :func:`write_result`."""
        path = self.out_dir / "arrays.npz"
        if not path.exists():
            return {}
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_workers(
    script: str,
    argvs: list[list[str]],
    out_root: Path,
    timeout_s: float,
    envs: list[dict[str, str]] | None = None,
) -> list[Worker]:
    """Run ``tests/distributed/<script>`` once per argv, all at once, within ``timeout_s``.

    Each worker gets ``--out <out_root>/w<i>`` first, and ``envs[i]`` on top of this
    process's environment. When one fails, the others get a short grace period, then every
    process group still alive is killed.
    """
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), base.get("PYTHONPATH", "")])
    started: list[tuple[subprocess.Popen[bytes], Path, Any]] = []
    try:
        for i, argv in enumerate(argvs):
            environment = {**base, **(envs[i] if envs else {})}
            out_dir = out_root / f"w{i}"
            out_dir.mkdir(parents=True, exist_ok=True)
            log = open(out_dir / "output.txt", "wb")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                [sys.executable, str(HERE / script), "--out", str(out_dir), *argv],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=str(ROOT),
                start_new_session=True,
            )
            started.append((process, out_dir, log))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            codes = [p.poll() for p, _, _ in started]
            if all(c is not None for c in codes):
                break
            if any(c not in (None, 0) for c in codes):
                deadline = min(deadline, time.monotonic() + _GRACE_S)
            time.sleep(0.2)
    finally:
        killed = []
        for process, _, log in started:
            killed.append(process.poll() is None)
            if killed[-1]:
                os.killpg(process.pid, signal.SIGKILL)  # the group this call started
            process.wait()
            log.close()
    return [
        Worker(i, p.returncode, k, (d / "output.txt").read_text(errors="replace"), d)
        for i, ((p, d, _), k) in enumerate(zip(started, killed))
    ]


def describe(workers: list[Worker], tail: int = 4000) -> str:
    """Return codes and output tails, for assertion messages."""
    return "\n".join(
        f"--- worker {w.index}: returncode {w.returncode}{' (killed)' if w.killed else ''}\n"
        f"{w.output[-tail:]}" for w in workers)
