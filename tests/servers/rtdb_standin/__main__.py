"""``python -m tests.servers.rtdb_standin``: run the stand-in server."""

from __future__ import annotations

from .main import main

if __name__ == "__main__":
    main()
