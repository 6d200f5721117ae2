"""``python -m comps_async.cli``."""

from .main import main

if __name__ == "__main__":  # (importing the module, as documentation tools do, runs nothing)
    main()
