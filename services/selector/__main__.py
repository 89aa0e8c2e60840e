"""``python -m services.selector``: run the selector service (same as ``orchestratex serve selector``)."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "selector"])
