"""The public surface: one sorted export list; the core never imports asyncpg."""

from __future__ import annotations

import subprocess
import sys

import stream_gateway_postgres


def test_exports_are_sorted_and_complete() -> None:
    exported = stream_gateway_postgres.__all__
    assert exported == sorted(exported)
    assert exported == ["PostgresDurableStore", "PostgresStreamManager", "PostgresStreamStorage"]
    for name in exported:
        assert getattr(stream_gateway_postgres, name).__module__.startswith(
            "stream_gateway_postgres."
        )


def test_importing_the_core_never_imports_asyncpg() -> None:
    probe = (
        "import sys, stream_gateway, stream_gateway.streams, stream_gateway.durable; "
        "print(sorted(m for m in sys.modules if m.startswith('asyncpg')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_root_does_not_load_the_server_helpers() -> None:
    probe = (
        "import sys, stream_gateway_postgres; "
        "print('stream_gateway_postgres.testing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
