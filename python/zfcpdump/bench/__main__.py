"""`python -m zfcpdump.bench --worker SPEC`: the child side of one measurement."""

import sys

from .measure import main_worker

sys.exit(main_worker(sys.argv[1:]))
