#!/usr/bin/env python3
"""CLI over keras_cra.training.detect (see `--help`)."""

import sys

from keras_cra.training.detect import main

if __name__ == "__main__":
    sys.exit(main())
