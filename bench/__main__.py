"""``python -m inferq.bench`` is ``inferq-bench``."""
import sys

from inferq.bench.cli import main

sys.exit(main())
