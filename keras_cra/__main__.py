"""`python -m keras_cra COMMAND`: the same as the `keras-cra` command."""

import sys

from keras_cra.commands import main

if __name__ == "__main__":
    sys.exit(main())
