"""`python -m engine.batch`: see engine.batch.cli."""
import sys

from engine.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
