"""``python -m gateway``: run the HTTP/WebSocket gateway (same as ``orchestratex serve gateway``)."""

from orchestratex.cli import main

if __name__ == "__main__":
    main(["serve", "gateway"])
