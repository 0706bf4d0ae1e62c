"""Conversations: one active run per conversation, found by another client, and the
three policies for a second start; across two gateways sharing a backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import FlowContext, Gateway, flow
from stream_gateway.asgi.conversations import Conversation
from stream_gateway.flow import ConversationPolicy
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.servers.flows_app import bearer_auth

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}
ALICE = {**STREAM, "authorization": "Bearer alice"}


class Turns:
    """A chat flow whose runs wait until released (all at once, or one by one)."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.cancelled: list[Any] = []
        self.release: dict[Any, anyio.Event] = {}

    def flow(self, policy: ConversationPolicy) -> Any:
        @flow(conversation_policy=policy)
        async def chat(data: Any, ctx: FlowContext[Any]) -> Any:
            self.started.append(data)
            await ctx.send_chunk(f"thinking about {data}")
            try:
                await self.release.setdefault(data, anyio.Event()).wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(data)
                raise
            return f"answer to {data}"

        return chat

    def finish(self, data: Any) -> None:
        self.release.setdefault(data, anyio.Event()).set()

    async def until(self, predicate: Any) -> None:
        with anyio.fail_after(20):
            while not predicate():  # noqa: ASYNC110 - the flow has no event to offer
                await anyio.sleep(0.01)


@asynccontextmanager
async def two_gateways(
    harness: BackendHarness, turns: Turns, policy: ConversationPolicy
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways on the same data, as two processes sharing a backend are."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            gateway = Gateway(
                [turns.flow(policy)],
                stream_manager=StreamManager(harness.new_storage(), lease=1.0),
                context_provider=bearer_auth,
            )
            url = await stack.enter_async_context(serve(gateway))
            http = httpx.AsyncClient(base_url=url, timeout=30)
            clients.append(await stack.enter_async_context(http))
        yield clients[0], clients[1]


async def start(http: httpx.AsyncClient, data: Any, **headers: str) -> httpx.Response:
    return await http.post("/chat", json={"data": data, "conversation": "c-1"}, headers=headers)


async def active(http: httpx.AsyncClient, headers: dict[str, str] = ALICE) -> httpx.Response:
    return await http.get("/chat/conversations/c-1", headers=headers)


async def test_another_client_finds_and_follows_the_active_run(harness: BackendHarness) -> None:
    turns = Turns()
    async with two_gateways(harness, turns, "reject") as (one, two):
        assert (await active(two)).status_code == 204  # nothing yet
        async with one.stream(
            "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=ALICE
        ) as first:
            stream_id = first.headers["x-genkit-stream-id"]
            found = await active(two)
            assert found.status_code == 200
            assert found.json() == {"streamId": stream_id, "conversation": "c-1", "turn": 0}
            # Bob's conversation c-1 is another one; anonymous too.
            assert (await active(two, {"authorization": "Bearer bob"})).status_code == 204
            assert (await active(two, {})).status_code == 204
            follow = {**ALICE, "x-genkit-stream-id": stream_id}
            async with two.stream("POST", "/chat", json={}, headers=follow) as second:
                turns.finish("q1")
                texts = [(await r.aread()).decode() for r in (first, second)]
        expected = 'data: {"message":"thinking about q1"}\n\ndata: {"result":"answer to q1"}\n\n'
        assert texts == [expected, expected]
        with anyio.fail_after(20):
            while (await active(one)).status_code != 204:  # noqa: ASYNC110 - polled over HTTP
                await anyio.sleep(0.01)
        # The next turn is turn 1, found from either gateway.
        async with two.stream(
            "POST", "/chat", json={"data": "q2"}, headers={**ALICE, "x-conversation-id": "c-1"}
        ):
            assert (await active(one)).json()["turn"] == 1
            turns.finish("q2")


async def test_reject_answers_409_with_the_active_stream(harness: BackendHarness) -> None:
    turns = Turns()
    async with two_gateways(harness, turns, "reject") as (one, two):
        async with one.stream(
            "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=ALICE
        ) as first:
            refused = await start(two, "q2", **ALICE)
            assert refused.status_code == 409
            error = refused.json()["error"]
            assert error["status"] == "ALREADY_EXISTS"
            assert error["details"] == {"streamId": first.headers["x-genkit-stream-id"]}
            # The same conversation id of another principal is not this one.
            turns.finish("b1")
            bob = await start(two, "b1", **{**STREAM, "authorization": "Bearer bob"})
            assert bob.status_code == 200
            turns.finish("q1")
            await first.aread()
    assert turns.started == ["q1", "b1"]


async def test_interrupt_cancels_the_active_run_then_starts(harness: BackendHarness) -> None:
    turns = Turns()
    async with two_gateways(harness, turns, "interrupt") as (one, two):
        async with one.stream(
            "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=ALICE
        ) as first:
            await turns.until(lambda: turns.started == ["q1"])
            async with two.stream(
                "POST", "/chat", json={"data": "q2", "conversation": "c-1"}, headers=ALICE
            ) as second:
                old = (await first.aread()).decode()
                await turns.until(lambda: turns.started == ["q1", "q2"])
                assert (await active(one)).json()["streamId"] == second.headers[
                    "x-genkit-stream-id"
                ]
                turns.finish("q2")
                new = (await second.aread()).decode()
    assert old.endswith('error: {"error":{"status":"CANCELLED","message":"flow cancelled"}}\n\n')
    assert turns.cancelled == ["q1"]
    assert new.endswith('data: {"result":"answer to q2"}\n\n')


async def test_enqueue_starts_when_the_active_run_ends(harness: BackendHarness) -> None:
    turns = Turns()
    async with two_gateways(harness, turns, "enqueue") as (one, two):
        async with (
            one.stream(
                "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=ALICE
            ) as first,
            anyio.create_task_group() as tg,
        ):
            await turns.until(lambda: turns.started == ["q1"])
            results: list[str] = []

            async def queued() -> None:
                response = await start(two, "q2", **ALICE)
                results.append(response.text)

            tg.start_soon(queued)
            await anyio.sleep(0.2)  # give the queued start time to (wrongly) begin
            assert turns.started == ["q1"]
            turns.finish("q1")
            turns.finish("q2")
            assert (await first.aread()).decode().endswith('{"result":"answer to q1"}\n\n')
    assert turns.started == ["q1", "q2"]
    assert results[0].endswith('data: {"result":"answer to q2"}\n\n')
    assert turns.cancelled == []


async def test_a_repeated_keyed_start_joins_its_turn_instead_of_being_refused(
    harness: BackendHarness,
) -> None:
    turns = Turns()
    keyed = {**ALICE, "idempotency-key": "0123456789abcdef-key"}
    async with two_gateways(harness, turns, "reject") as (one, two):
        async with one.stream(
            "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=keyed
        ) as first:
            async with two.stream(
                "POST", "/chat", json={"data": "q1", "conversation": "c-1"}, headers=keyed
            ) as again:
                assert again.status_code == 200
                assert again.headers["x-genkit-stream-id"] == first.headers["x-genkit-stream-id"]
                other = await two.post(
                    "/chat", json={"data": "other", "conversation": "c-1"}, headers=keyed
                )
                assert other.status_code == 409
                turns.finish("q1")
                await again.aread()
    assert turns.started == ["q1"]


async def test_malformed_and_misplaced_conversations(harness: BackendHarness) -> None:
    turns = Turns()
    async with two_gateways(harness, turns, "reject") as (one, _):
        bad = await one.post("/chat", json={"data": 1, "conversation": "no spaces"}, headers=STREAM)
        assert bad.status_code == 400
        assert "conversation id" in bad.json()["error"]["message"]
        assert (await one.get("/chat/conversations/" + "x" * 129)).status_code == 400
        unary = await one.post("/chat", json={"data": 1, "conversation": "c-1"})
        assert unary.status_code == 400
        assert "streaming request" in unary.json()["error"]["message"]
    assert turns.started == []


@pytest.mark.parametrize("turns", [1, 2, 3, 7, 8, 13, 64])
async def test_the_latest_turn_is_found_among_many(harness: BackendHarness, turns: int) -> None:
    async with StreamManager(harness.new_storage()) as manager:
        conversation = Conversation(manager, "chat", "owner", "c-9")
        assert await conversation.latest() is None
        for turn in range(turns):
            writer = await manager.open(
                conversation.turn_id(turn), flow="chat", owner="owner",
                extra=conversation.extra(turn, None),
            )  # fmt: skip
            await writer.done(turn)
        latest = await conversation.latest()
        assert latest is not None and Conversation.turn_of(latest) == turns - 1
        assert await conversation.active() is None
        # Another owner's or flow's conversation of the same id is another one.
        assert await Conversation(manager, "chat", "other", "c-9").latest() is None
        assert await Conversation(manager, "other", "owner", "c-9").latest() is None
