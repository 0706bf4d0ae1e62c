"""The protocols package: one sorted export list, every public name documented."""

from __future__ import annotations

import inspect

import stream_gateway.protocols


def test_protocols_exports_are_sorted_and_documented() -> None:
    module = stream_gateway.protocols
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
