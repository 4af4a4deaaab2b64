#!/usr/bin/env python3
"""Train a CRA model with model.fit (see `--help`); logic in keras_cra.training.train."""

import sys

from keras_cra.training.train import main

if __name__ == "__main__":
    sys.exit(main())
