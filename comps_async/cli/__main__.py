"""``python -m comps_async.cli``."""

from .main import main

main()
