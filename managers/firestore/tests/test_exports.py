"""The public surface: one sorted export list; the core never imports Google's SDK."""

from __future__ import annotations

import subprocess
import sys

import stream_gateway_firestore


def test_exports_are_sorted_and_complete() -> None:
    exported = stream_gateway_firestore.__all__
    assert exported == sorted(exported)
    assert exported == ["FirestoreDurableStore", "FirestoreStreamManager", "FirestoreStreamStorage"]
    for name in exported:
        assert getattr(stream_gateway_firestore, name).__module__.startswith(
            "stream_gateway_firestore."
        )


def test_importing_the_core_never_imports_google() -> None:
    probe = (
        "import sys, stream_gateway, stream_gateway.streams, stream_gateway.durable.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('google', 'grpc'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_root_does_not_load_the_emulator_helpers() -> None:
    probe = (
        "import sys, stream_gateway_firestore; "
        "print('stream_gateway_firestore.testing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
