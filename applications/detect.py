#!/usr/bin/env python3
"""Draw an exported detector's boxes on an image (see `--help`); logic in
keras_cra.detection.inference. Example:

    python applications/detect.py scene.png --model saved_models/cra_retinanet_scenes
"""

import sys

from keras_cra.detection.inference import main

if __name__ == "__main__":
    sys.exit(main())
