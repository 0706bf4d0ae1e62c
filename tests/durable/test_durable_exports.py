"""`stream_gateway.durable`'s export list: sorted, complete, every name documented."""

from __future__ import annotations

import inspect

import stream_gateway.durable as durable


def test_all_is_sorted_complete_and_documented() -> None:
    assert durable.__all__ == sorted(durable.__all__)
    for name in durable.__all__:
        obj = getattr(durable, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    for cls in (durable.DurableContext, durable.DurableEngine, durable.Worker):
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and inspect.isfunction(member):
                assert (member.__doc__ or "").strip(), f"{cls.__name__}.{attr}"
