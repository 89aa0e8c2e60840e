"""``python -m services.providers``: run the providers service (same as ``orchestratex serve providers``)."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "providers"])
