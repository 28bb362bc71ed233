"""The one way in for events: what handlers and the request path call, never the pipeline.

Two calls, for the two kinds of caller:

- :meth:`Sink.offer`, fire-and-forget, for events that ride along with an answer that
  goes out whatever happens to them (pixels, redirects, ``track: true`` routes, dead
  letters): never raises; a loss is counted by the pipeline as ``dropped``;
- :meth:`Sink.put`, for ingestion (tracker, Segment): the events are taken only if they
  can be kept, and with ``durable`` the call returns once they are safe. Every way of
  not taking them is one error, :class:`EventsRefused`, carrying the status the client
  gets (413 or 503); the request path turns it into the answer in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.events.envelope import Event
from gateway.events.pending import CannotKeep, EventTooLarge, Overloaded
from gateway.events.pipeline import EventPipeline
from gateway.events.spool import SpoolError

RETRY_AFTER = "1"  # seconds a refused client is asked to wait (queue and spool drain fast)


class EventsRefused(Exception):
    """The events were not taken. ``kind``: ``too_large`` (one is past what Kafka takes,
    413: retrying cannot help), ``overloaded`` (the queue is full, 503) or ``unavailable``
    (they cannot be kept: the spool is full with Kafka down, 503); retry later."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.status = 413 if kind == "too_large" else 503

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER} if self.status == 503 else {}


class Sink:
    """In front of one worker's pipeline; handlers hold it from the start. Events
    enrichment withheld (a bot to drop, consent denied) stop here, counted by
    ``withheld(event_type)``, and their callers answer as if they were taken."""

    __slots__ = ("_pipeline", "_withheld")

    def __init__(
        self, pipeline: EventPipeline, withheld: Callable[[str], None] = lambda kind: None
    ) -> None:
        self._pipeline = pipeline
        self._withheld = withheld

    def offer(self, event: Event) -> bool:
        """Take ``event`` if there is room (False, counted as dropped, if not); the
        caller answers either way."""
        if event.withheld:
            self._withheld(event.event_type)
            return True
        return self._pipeline.offer(event)

    def try_offer(self, event: Event) -> bool:
        """:meth:`offer` for a caller that will offer again: a refusal is not a loss yet."""
        if event.withheld:
            self._withheld(event.event_type)
            return True
        return self._pipeline.offer(event, count_loss=False)

    async def put(self, events: Sequence[Event], *, durable: bool) -> None:
        """Take all of ``events`` or none; with ``durable``, return once they are safe.
        Raises :class:`EventsRefused` when they were not taken, or could not be kept."""
        if any(event.withheld for event in events):
            for event in events:
                if event.withheld:
                    self._withheld(event.event_type)
            events = [event for event in events if not event.withheld]
            if not events:
                return
        try:
            done = self._pipeline.submit_all(events, durable=durable)
        except EventTooLarge as exc:
            raise EventsRefused("too_large", str(exc)) from None
        except CannotKeep as exc:
            raise EventsRefused("unavailable", str(exc)) from None
        except Overloaded as exc:
            raise EventsRefused("overloaded", str(exc)) from None
        if done is None:
            return
        try:
            await done
        except SpoolError:
            raise EventsRefused("unavailable", "events cannot be stored right now") from None
