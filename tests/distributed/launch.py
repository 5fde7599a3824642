"""Run one worker script so that a hang can be reported: ``python launch.py STACKS SCRIPT ARGS``.

Before the script's first line runs, SIGUSR1 is made to write the Python stack of every
thread to the file STACKS (``faulthandler``, from its C signal handler, so it works while
the script is blocked in C++ code too); the harness sends SIGUSR1 to a worker still running
at its deadline, then kills it. The script then runs as ``__main__`` with ``sys.argv`` as if
it had been started directly (same ``sys.path[0]``: this folder).
"""

from __future__ import annotations

import faulthandler
import runpy
import signal
import sys


def main() -> None:
    stacks_path, script = sys.argv[1], sys.argv[2]
    stacks = open(stacks_path, "w")  # noqa: SIM115 - must stay open for the signal handler
    # Ignored until registered, and again once faulthandler is gone in interpreter shutdown
    # (it restores this handler): a late SIGUSR1 must not end the process, which the
    # harness then still finds alive and hung, for gdb.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
