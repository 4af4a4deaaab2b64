#!/usr/bin/env python3
"""CLI over keras_cra.training.ablate (see `--help`)."""

import sys

from keras_cra.training.ablate import main

if __name__ == "__main__":
    sys.exit(main())
