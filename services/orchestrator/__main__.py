"""``python -m services.orchestrator``: run the orchestrator service (same as ``orchestratex serve orchestrator``)."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "orchestrator"])
