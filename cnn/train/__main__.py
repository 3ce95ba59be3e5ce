"""``python -m cnn.train``: the command line of ``cnn.train.run``."""
from .distributed import exit_process
from .run import main

if __name__ == "__main__":
    exit_process(main())
