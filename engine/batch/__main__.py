"""`python -m engine.batch`: see engine.batch.cli."""
from engine.batch.cli import entry

if __name__ == "__main__":
    entry()
