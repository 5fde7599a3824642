"""A worker that ends, or hangs, the way argv[1] says, without any framework: the parent
test checks that the harness reports each hang as a hang, and where. Run by
tests/test_distributed.py.

- ``none``: ends at once, status 0.
- ``sleep``: hangs in :func:`wait_forever` (Python code).
- ``shutdown``: its Python code ends, then it hangs in ``exit()``, after Python's
  finalisation (a C exit handler, as a C++ static destructor would).
- ``watchdog``: hangs in :func:`wait_forever`, under a 1 s exit watchdog like
  ``common.bound_the_exit``'s.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import time


def wait_forever() -> None:
    while True:
        time.sleep(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("mode", choices=["none", "sleep", "shutdown", "watchdog"])
    mode = parser.parse_args().mode
    if mode == "sleep":
        wait_forever()
    elif mode == "shutdown":
        libc = ctypes.CDLL("libc.so.6")
        libc.on_exit(libc.pause, None)  # pause() once Python has finished
    elif mode == "watchdog":
        faulthandler.dump_traceback_later(1, exit=True)
        wait_forever()


if __name__ == "__main__":
    main()
