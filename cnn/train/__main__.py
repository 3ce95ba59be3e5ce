"""``python -m cnn.train``: the command line of ``cnn.train.run``."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
