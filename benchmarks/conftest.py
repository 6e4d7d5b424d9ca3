"""pytest-benchmark suite: run with `make bench` (never part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
