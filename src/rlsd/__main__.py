import sys

from rlsd.cli import main

sys.exit(main())
