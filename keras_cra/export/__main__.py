"""`python -m keras_cra.export MODEL --out DIR`: the export command (`keras_cra.export.cli`)."""

import sys

from keras_cra.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
