#!/usr/bin/env python3
"""CLI over keras_cra.export (see `--help`)."""

import sys

from keras_cra.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
