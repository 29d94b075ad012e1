import sys

from sketchgen.cli import main

if __name__ == "__main__":  # not when multiprocessing re-imports it in a child
    sys.exit(main())
