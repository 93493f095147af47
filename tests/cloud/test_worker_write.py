"""The worker writes its replies to the broker at once (Worker._write_now), not two turns of the
event loop later, when aiomqtt's writer would: a lone tap's reply is on the socket before the
loop runs anything else."""

from __future__ import annotations

import asyncio

import aiomqtt

from casecloud.batch import Out
from casecloud.worker import Worker


def test_replies_are_on_the_socket_before_the_loop_turns(broker: tuple[str, int]) -> None:
    host, port = broker

    async def run() -> list[tuple[str, bytes]]:
        async with aiomqtt.Client(host, port, identifier="t-worker") as w, \
                aiomqtt.Client(host, port, identifier="t-case") as case:
            await case.subscribe("lockcase/v1/s1/c1/#")
            Worker._publish(w, [[Out("lockcase/v1/s1/c1/rep", b"a")], [],
                                [Out("lockcase/v1/s1/c1/evtack", b"b")]])
            # Nothing left queued in paho: written, with no await (no loop turn) in between.
            assert not w._client._out_packet
            got = []
            async with asyncio.timeout(10):
                async for m in case.messages:
                    got.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                    if len(got) == 2:
                        return got
        return got

    assert asyncio.run(run()) == [("lockcase/v1/s1/c1/rep", b"a"), ("lockcase/v1/s1/c1/evtack", b"b")]


def test_no_write_watch_is_left_behind(broker: tuple[str, int]) -> None:
    """A reply written at once must not leave aiomqtt watching the socket for writing: the watch
    aiomqtt adds a turn later was never removed, and the loop called paho's loop_write hundreds of
    thousands of times a second (a core) until something else was written (review, 2026-12-02).
    A reply alone (a texted code's "code sent", published after the batch's acks), then one
    followed by an ack, as the worker sends them."""
    import selectors

    host, port = broker

    async def run() -> list[bool]:
        watched = []
        async with aiomqtt.Client(host, port, identifier="t-worker") as w:
            sock = w._client.socket()
            assert sock is not None
            selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
            for then_ack in (False, True):
                Worker._publish(w, [[Out("lockcase/v1/s1/c1/rep", b"a")]])
                if then_ack:
                    w._client.publish("lockcase/v1/s1/c1/cmd", b"x", qos=0)  # queued as an ack is
                await asyncio.sleep(0.1)  # turns of the loop: what aiomqtt scheduled has run
                try:
                    events = selector.get_key(sock.fileno()).events
                except KeyError:
                    events = 0
                watched.append(bool(events & selectors.EVENT_WRITE))
        return watched

    assert asyncio.run(run()) == [False, False]


def test_a_broken_connection_ends_the_client_instead_of_raising(broker: tuple[str, int]) -> None:
    host, port = broker

    async def run() -> None:
        async with aiomqtt.Client(host, port, identifier="t-worker") as w:
            sock = w._client.socket()
            assert sock is not None
            sock.close()  # the connection gone under paho
            Worker._publish(w, [[Out("lockcase/v1/s1/c1/rep", b"a")]])  # does not raise
            async with asyncio.timeout(10):
                try:
                    await w._disconnected
                except Exception:
                    pass
            assert w._disconnected.done()

    try:
        asyncio.run(run())
    except aiomqtt.MqttError:
        pass  # leaving the context of a client whose connection is gone
