#!/usr/bin/env python3
"""The main job: `make demo` (train, evaluate, export CRAResNet20 on Fashion-MNIST)."""

import sys

from keras_cra.training.demo import main

if __name__ == "__main__":
    sys.exit(main())
