"""``python -m bench`` is ``inferq-bench``."""
import sys

from bench.cli import main

sys.exit(main())
