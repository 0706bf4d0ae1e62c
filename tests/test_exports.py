"""The public API: one sorted export list, every name documented, no Google SDK in the core."""

from __future__ import annotations

import inspect
import subprocess
import sys

import stream_gateway
import stream_gateway.asgi
import stream_gateway.streams


def test_all_is_sorted_and_complete() -> None:
    for module in (stream_gateway, stream_gateway.streams, stream_gateway.asgi):
        names = module.__all__
        assert names == sorted(names), module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_names_are_documented() -> None:
    for module in (stream_gateway, stream_gateway.streams, stream_gateway.asgi):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                doc = getattr(obj, "__doc__", None)
                assert doc and doc.strip(), f"{module.__name__}.{name} has no docstring"


def test_core_import_pulls_no_google_sdk() -> None:
    code = (
        "import sys, stream_gateway, stream_gateway.streams, stream_gateway.client;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('google', 'grpc', 'firebase_admin')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
