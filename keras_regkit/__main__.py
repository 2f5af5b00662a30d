"""`python -m keras_regkit ...` runs the `keras-regkit` command line."""

import sys

from keras_regkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
