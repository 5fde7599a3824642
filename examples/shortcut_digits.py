"""The shortcut demo as a script: ``python examples/shortcut_digits.py [--epochs N]``.

The training digits carry a small marker whose spot gives the label away in 95% of the
images; the test digits carry it at random. The model learns the marker, and Grad-CAM
shows it: the maps leave the digit for the marker while training accuracy climbs and test
accuracy does not. Same as ``gradcam-callbacks demo --shortcut``; everything lives in
:mod:`gradcam_callbacks.demo`.
"""

import sys

from gradcam_callbacks.demo import main

if __name__ == "__main__":
    sys.exit(main(["--shortcut", *sys.argv[1:]]))
