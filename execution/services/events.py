"""Publishing an execution's live events to the channel layer (the README's "Websocket
protocol").

Each batch of events goes to two groups, `thread.<thread hex>` and `execution.<execution hex>`,
as `{"type": "execution.events", "events": [EVENT, ...]}` where each EVENT is the websocket
frame itself (a consumer also takes a lone `{"type": "execution.event", "event": EVENT}`).
One message carries up to MESSAGE_EVENTS events and about MESSAGE_TEXT_CHARS of their text:
a quick run's events are one message per group rather than one per event, which on Redis is
a round trip each. The
caller stores the event's effect and `last_seq` *before* publishing, so a client replaying
from the row and then following live events sees no gap and no duplicate.

Which loop publishes: with Redis (production) the service portal's, which keeps one
connection pool warm. The in-memory channel layer keeps asyncio queues that belong to the loop
of the consumers reading them (daphne's main loop), and waking them from another thread is not
thread-safe, so with it an event is published on the loop of the server that started the
execution (`server_event_loop`) when there is one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from execution.services.runtime import service_portal

logger = logging.getLogger(__name__)

# Publishing waits at most this long for the channel layer; a stuck layer must not stall runs.
PUBLISH_TIMEOUT_SECONDS = 5.0


def thread_group(thread_id: uuid.UUID | str) -> str:
    """The channel layer group of a thread's events."""
    return f"thread.{uuid.UUID(str(thread_id)).hex}"


def execution_group(execution_id: uuid.UUID | str) -> str:
    """The channel layer group of one execution's events."""
    return f"execution.{uuid.UUID(str(execution_id)).hex}"


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def server_event_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the ASGI server whose `sync_to_async` thread is calling, or None.

    Needed only with the in-memory channel layer, whose queues belong to the loop of the
    consumers reading them. Asked the public way: `async_to_sync` called from such a thread
    runs on the server's loop; called elsewhere it runs on a loop of its own that is over
    when it returns (not running: None).
    """
    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        return None
    # A server thread keeps serving the same loop (request threads are pooled): remember it
    # while it runs, rather than a hop to it and back for every run.
    known: asyncio.AbstractEventLoop | None = getattr(_server_loops, "loop", None)
    if known is not None and known.is_running():
        return known
    loop = async_to_sync(_running_loop)()
    if not loop.is_running():
        return None
    _server_loops.loop = loop
    return loop


_server_loops = threading.local()


# What one channel-layer message carries at most (see the module doc).
MESSAGE_EVENTS = 64
MESSAGE_TEXT_CHARS = 256 * 1024


def _weight(event: dict[str, Any]) -> int:
    """About how much an event adds to a message: its text, a result as a whole message (an
    inline result may be up to the reference threshold), anything else a little."""
    if event.get("type") == "result":
        return MESSAGE_TEXT_CHARS
    return len(event.get("text") or "") + 256


def message_batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`events` in order, cut into messages within MESSAGE_EVENTS and MESSAGE_TEXT_CHARS
    (an event heavier than that alone goes alone)."""
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    weight = 0
    for event in events:
        event_weight = _weight(event)
        if batch and (len(batch) >= MESSAGE_EVENTS or weight + event_weight > MESSAGE_TEXT_CHARS):
            batches.append(batch)
            batch, weight = [], 0
        batch.append(event)
        weight += event_weight
    if batch:
        batches.append(batch)
    return batches


class EventPublisher:
    """Sends events of executions to the channel layer, in order, from a plain thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop

    def publish(
        self, *, execution_id: uuid.UUID | str, thread_id: uuid.UUID | str | None, event: dict
    ) -> None:
        """Send one event; see publish_many."""
        self.publish_many(execution_id=execution_id, thread_id=thread_id, events=[event])

    def publish_many(
        self,
        *,
        execution_id: uuid.UUID | str,
        thread_id: uuid.UUID | str | None,
        events: list[dict[str, Any]],
    ) -> None:
        """Send `events`, in order, each to the execution's group then its thread's group;
        blocks until sent (one hop to the publishing loop for the whole batch).

        Never raises: a channel layer failure is logged, because the events' effects are
        already stored and a client can always replay them from the database.
        """
        layer = get_channel_layer()
        if layer is None or not events:
            return
        groups = [execution_group(execution_id)]
        if thread_id is not None:
            groups.append(thread_group(thread_id))

        async def send() -> None:
            for batch in message_batches(events):
                message: dict[str, Any] = {"type": "execution.events", "events": batch}
                for group in groups:
                    await layer.group_send(group, message)

        loop = self.loop
        try:
            if loop is None or loop.is_closed() or not loop.is_running():
                service_portal().run(send(), PUBLISH_TIMEOUT_SECONDS)
            else:
                asyncio.run_coroutine_threadsafe(send(), loop).result(PUBLISH_TIMEOUT_SECONDS)
        except Exception:
            logger.exception(
                "could not publish %d event(s) of execution %s", len(events), execution_id
            )
