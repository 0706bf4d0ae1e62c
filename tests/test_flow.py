"""Flows run in-process as they run when served; a wrong shape fails at definition."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from stream_gateway import Flow, FlowContext, InternalError, InvalidArgumentError, flow

pytestmark = pytest.mark.anyio


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    words: int


@flow(input=Question, output=Answer, chunk=str)
async def answer(q: Question, ctx: FlowContext[str]) -> Answer:
    for word in q.text.split():
        await ctx.send_chunk(word)
    return Answer(words=len(q.text.split()))


@flow
async def bad_chunk(data: Any, ctx: FlowContext[Any]) -> str:
    await ctx.send_chunk({1, 2})  # a set: not JSON
    return "unreachable"


@flow(output=int)
async def bad_output(data: Any, ctx: FlowContext[Any]) -> Any:
    return "not a number"


@flow
async def anything(data: Any, ctx: FlowContext[Any]) -> Any:
    return data


async def test_input_is_validated_in_process() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid input for flow 'answer'") as info:
        await answer({"txt": "typo"})
    assert tuple(info.value.details[0]["loc"]) == ("text",)
    # A model instance and its dict both do, as a client's JSON would.
    assert await answer(Question(text="a b")) == Answer(words=2)
    assert await answer({"text": "a b c"}) == Answer(words=3)


async def test_any_json_input_must_be_json_in_process() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid input for flow 'anything'"):
        await anything({"when": object()})
    with pytest.raises(InvalidArgumentError):
        await anything(float("nan"))
    assert await anything({"a": [1, None]}) == {"a": [1, None]}


async def test_output_is_validated_in_process() -> None:
    with pytest.raises(InternalError):
        await bad_output(None)


async def test_non_json_chunks_fail_with_or_without_a_listener() -> None:
    with pytest.raises(InternalError):
        await bad_chunk(None)
    received: list[Any] = []
    with pytest.raises(InternalError):
        await bad_chunk(None, on_chunk=received.append)
    assert received == []


async def test_on_chunk_may_be_sync_or_async() -> None:
    sync_seen: list[Any] = []
    assert await answer({"text": "one two"}, on_chunk=sync_seen.append) == Answer(words=2)
    async_seen: list[Any] = []

    async def collect(chunk: Any) -> None:
        async_seen.append(chunk)

    await answer({"text": "one two"}, on_chunk=collect)
    assert sync_seen == async_seen == ["one", "two"]


def test_a_sync_function_is_refused_at_definition() -> None:
    def sync(data: Any, ctx: Any) -> Any:
        return data

    with pytest.raises(TypeError, match=r"not an `async def`.*async def sync\(input, ctx\)"):
        flow(sync)


def test_a_one_argument_function_is_refused_at_definition() -> None:
    async def one(data: Any) -> Any:
        return data

    with pytest.raises(TypeError, match=r"takes \(data: 'Any'\).*async def one\(input, ctx\)"):
        flow(one)  # type: ignore[arg-type]

    async def none() -> None:
        return None

    with pytest.raises(TypeError, match="async def named"):
        flow("named")(none)  # type: ignore[arg-type]


def test_an_async_generator_is_refused_with_a_hint() -> None:
    async def tokens(data: Any, ctx: Any) -> AsyncIterator[str]:
        yield "a"

    with pytest.raises(TypeError, match=r"async generator.*ctx\.send_chunk.*return"):
        flow(tokens)  # type: ignore[arg-type]


def test_a_sync_generator_is_refused() -> None:
    def gen(data: Any, ctx: Any) -> Any:
        yield data

    with pytest.raises(TypeError, match="is a generator"):
        Flow(gen, name="gen")


def test_async_callables_of_other_shapes_are_accepted() -> None:
    async def three(data: Any, ctx: Any, extra: int = 0) -> Any:
        return data

    class Callable:
        async def __call__(self, data: Any, ctx: Any) -> Any:
            return data

    async def keyed(data: Any, ctx: Any, *, key: str) -> Any:
        return data

    assert flow(three).name == "three"
    assert Flow(Callable(), name="callable").name == "callable"
    assert Flow(functools.partial(keyed, key="k"), name="partial").name == "partial"
    with pytest.raises(TypeError, match="takes"):
        Flow(keyed, name="keyed")  # type: ignore[arg-type]  # a keyword the server never passes
