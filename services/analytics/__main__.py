"""``python -m services.analytics``: run the analytics service (same as ``orchestratex serve analytics``)."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "analytics"])
