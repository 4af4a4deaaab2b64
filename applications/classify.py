#!/usr/bin/env python3
"""Classify images with a .tflite / SavedModel / .keras model (see `--help`);
logic in keras_cra.inference. Example:

    python applications/classify.py photo.jpg --model saved_models/cra_resnet20_fashion_mnist/model_int8.tflite
"""

import sys

from keras_cra.inference import main

if __name__ == "__main__":
    sys.exit(main())
