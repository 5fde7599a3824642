"""``python -m gradcam_callbacks``: the same command line as ``gradcam-callbacks``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
