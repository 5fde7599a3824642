"""Launch worker scripts as bounded subprocesses and read back what they recorded.

Each worker runs in its own session (process group); whatever happens, every group this
module started is killed before :func:`run_workers` returns, so a hung collective can never
outlive its test. Servers and coordinators bind to 127.0.0.1 only.

A worker still running at its deadline is reported as hung, with where it hung: it runs
under ``launch.py``, so SIGUSR1 makes it write every thread's Python stack (``faulthandler``)
before it is killed; where ``gdb`` is installed, its native stacks are taken too (within
``_GDB_S`` in all). Worker scripts also bound their own ending (``common.bound_the_exit``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent

# A peer that fails leaves the others waiting in a collective; give them this long to notice.
_GRACE_S = 20.0
# A worker sent SIGUSR1 gets this long to write its stacks before it is killed.
_DUMP_S = 5.0
# gdb, where installed, gets this long in all for the native stacks of the hung workers (it
# can take a minute to load libtorch's symbols on a busy machine); pytest's 600 s per test
# must still cover the longest limit (420 s) plus the dumps.
_GDB_S = 90.0


@dataclass
class Worker:
    """One finished (or killed) worker process. In every test, worker ``i`` is process (rank)
    ``i`` of its group."""

    index: int
    returncode: int  # negative: ended by that signal
    killed: bool  # still running at the deadline (or after a peer failed), so killed here
    output: str
    out_dir: Path
    # Why it was killed: "the 300 s limit" or "20 s after a peer failed"; "" if not killed.
    deadline: str = ""
    stacks: str = ""  # every thread's Python stack when it was killed (faulthandler)
    native_stacks: str = ""  # gdb's "thread apply all bt" then, where gdb is installed

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

    @property
    def ok(self) -> bool:
        """Ended by itself, with exit status 0."""
        return self.returncode == 0 and not self.killed

    @property
    def timed_out(self) -> str:
        """The stack dump of the worker's own exit watchdog (``common.bound_the_exit``),
        which ends a worker stuck in its ending with status 1; ``""`` if it did not fire."""
        match = _WATCHDOG.search(self.output)
        return self.output[match.start():] if match else ""

    @property
    def hung(self) -> bool:
        """Killed here at a deadline, or ended by its own exit watchdog."""
        return self.killed or bool(self.timed_out)

    def where(self) -> str:
        """Where a hung worker was: its main thread's innermost frame, and the innermost
        frame in the worker script; or why there is no Python stack."""
        stacks = self.stacks if self.killed else self.timed_out
        main = _main_thread_frames(stacks)
        if main:
            innermost = main[0]
            own = next((f for f in main if Path(f[0]).parent == HERE
                        and Path(f[0]).name != "launch.py"), None)
            text = f"in {innermost[2]} ({innermost[0]}:{innermost[1]})"
            if own is not None and own is not innermost:
                text += f", called from {own[2]} ({Path(own[0]).name}:{own[1]})"
            return text
        if stacks.strip():
            return "with no Python frame on the main thread (see the stacks)"
        return ("without a Python stack: past the end of its Python code (interpreter "
                "shutdown, where faulthandler is gone), or before launch.py ran; see the "
                "native stacks, where gdb is installed")

    def summary(self) -> str:
        """One line: how this worker ended."""
        if self.killed:
            ending = ("so killed" if self.returncode < 0 else
                      f"it ended by itself, with status {self.returncode}, while its stacks "
                      "were taken")
            return (f"worker {self.index}: HUNG, still running at {self.deadline}; {ending}; "
                    f"{self.where()}")
        if self.timed_out:
            return (f"worker {self.index}: HUNG in its ending, so its exit watchdog ended it "
                    f"(returncode {self.returncode}); {self.where()}")
        return f"worker {self.index}: returncode {self.returncode}"


_WATCHDOG = re.compile(r"^Timeout \(\d+:\d\d:\d\d\)!$", re.MULTILINE)
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def _main_thread_frames(stacks: str) -> list[tuple[str, int, str]]:
    """``(file, line, function)`` of the main thread in a faulthandler dump, innermost first:
    the thread whose outermost frame is ``launch.py``'s (every worker's entry point)."""
    for block in re.split(r"\n\s*\n", stacks):
        frames = [(m[1], int(m[2]), m[3]) for m in map(_FRAME.match, block.splitlines()) if m]
        if frames and Path(frames[-1][0]).name == "launch.py":
            return frames
    return []


@dataclass
class _Running:
    index: int
    process: subprocess.Popen[bytes]
    out_dir: Path
    log: IO[bytes]
    deadline: str = ""

    @property
    def stacks_path(self) -> Path:
        return self.out_dir / "stacks.txt"

    def dump_python_stacks(self) -> None:
        """SIGUSR1: launch.py's faulthandler writes every thread's Python stack. Past the end
        of Python (interpreter shutdown) the signal is ignored and nothing is written."""
        try:
            os.kill(self.process.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return
        end = time.monotonic() + _DUMP_S
        size = -1
        while time.monotonic() < end and self.process.poll() is None:
            time.sleep(0.2)
            now = self.stacks_path.stat().st_size if self.stacks_path.exists() else 0
            if now and now == size:  # written, and no longer growing
                break
            size = now

    def dump_native_stacks(self, seconds: float) -> None:
        """gdb's backtrace of every thread, where gdb is installed and it is still alive."""
        gdb = shutil.which("gdb")
        if not gdb or seconds <= 0 or self.process.poll() is not None:
            return
        try:
            traced = subprocess.run(
                [gdb, "-p", str(self.process.pid), "-batch", "-nx", "-iex", "set auto-load off",
                 "-ex", "thread apply all bt 30"],
                capture_output=True, text=True, timeout=seconds)
            (self.out_dir / "native_stacks.txt").write_text(traced.stdout)  # (no warnings)
        except (OSError, subprocess.TimeoutExpired):
            pass


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
    native_stacks: bool = True,
) -> list[Worker]:
    """Run ``tests/distributed/<script>`` once per argv, all at once, within ``timeout_s``.

    Each worker gets ``--out <out_root>/w<i>`` first, and ``envs[i]`` on top of this
    process's environment. When one fails, the others get a short grace period. Then each
    worker still running writes its Python stacks, gdb takes their native stacks (unless
    ``native_stacks`` is false), and every process group still alive is killed.
    """
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), base.get("PYTHONPATH", "")])
    started: list[_Running] = []
    try:
        for i, argv in enumerate(argvs):
            environment = {**base, **(envs[i] if envs else {})}
            out_dir = out_root / f"w{i}"
            out_dir.mkdir(parents=True, exist_ok=True)
            log = open(out_dir / "output.txt", "wb")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                [sys.executable, str(HERE / "launch.py"), str(out_dir / "stacks.txt"),
                 str(HERE / script), "--out", str(out_dir), *argv],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=str(ROOT),
                start_new_session=True,
            )
            started.append(_Running(i, process, out_dir, log))
        deadline, why = time.monotonic() + timeout_s, f"the {timeout_s:g} s limit"
        while time.monotonic() < deadline:
            codes = [w.process.poll() for w in started]
            if all(c is not None for c in codes):
                break
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed and time.monotonic() + _GRACE_S < deadline:
                deadline = time.monotonic() + _GRACE_S
                why = f"{_GRACE_S:g} s after worker {failed[0]} failed"
            time.sleep(0.2)
        hung = [w for w in started if w.process.poll() is None]
        for running in hung:
            running.deadline = why
            running.dump_python_stacks()
        gdb_end = time.monotonic() + (_GDB_S if native_stacks else 0.0)
        for running in hung:
            running.dump_native_stacks(gdb_end - time.monotonic())
    finally:
        for running in started:
            if running.process.poll() is None:
                running.deadline = running.deadline or "an interruption"
                os.killpg(running.process.pid, signal.SIGKILL)  # the group this call started
            running.process.wait()
            running.log.close()
    return [
        Worker(w.index, w.process.returncode, bool(w.deadline),
               (w.out_dir / "output.txt").read_text(errors="replace"), w.out_dir, w.deadline,
               _read(w.stacks_path), _read(w.out_dir / "native_stacks.txt"))
        for w in started
    ]


def _main_thread_first(backtraces: str) -> str:
    """gdb's ``thread apply all bt`` output with thread 1 (the main thread) moved first."""
    blocks = re.split(r"\n(?=Thread \d+ \()", backtraces)
    return "\n".join(sorted(blocks, key=lambda b: not b.startswith("Thread 1 (")))


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def all_ok(workers: list[Worker]) -> bool:
    """Every worker ended by itself with exit status 0."""
    return all(w.ok for w in workers)


def describe(workers: list[Worker], tail: int = 4000) -> str:
    """How each worker ended, for assertion messages: which hung and where (with their
    stacks), then each worker's output tail."""
    parts = ["\n".join(w.summary() for w in workers)]
    for w in workers:
        if w.killed:
            parts.append(f"--- worker {w.index}: Python stacks when killed (faulthandler)\n"
                         f"{w.stacks.strip() or '(none written)'}")
        elif w.timed_out:
            parts.append(f"--- worker {w.index}: Python stacks when its exit watchdog fired "
                         f"(faulthandler)\n{w.timed_out.strip()}")
        if w.native_stacks:
            parts.append(f"--- worker {w.index}: native stacks when killed (gdb, main thread "
                         f"first; the first {2 * tail} characters)\n"
                         f"{_main_thread_first(w.native_stacks)[:2 * tail]}")
    for w in workers:  # (without the watchdog's stacks, shown above)
        output = w.output[:len(w.output) - len(w.timed_out)]
        parts.append(f"--- worker {w.index}: output (last {tail} characters)\n"
                     f"{output[-tail:]}")
    return "\n".join(parts)
