"""`python -m keras_regkit_cli ...` runs `keras-regkit` (as fast to answer `--help`)."""

import sys

from keras_regkit_cli import main

if __name__ == "__main__":
    sys.exit(main())
