import sys

from sketchgen.cli import main

sys.exit(main())
