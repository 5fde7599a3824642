"""The cluttered-digits demo as a script: ``python examples/cluttered_digits.py [--epochs N]``.

Everything lives in :mod:`gradcam_callbacks.demo` (also ``gradcam-callbacks demo``).
"""

import sys

from gradcam_callbacks.demo import main

if __name__ == "__main__":
    sys.exit(main())
