"""The event pipeline of one worker: a bounded queue, a sender, and a replayer.

Handlers reach it through ``gateway.events.sink``: ``submit_all`` takes ingested events
only if they can be kept (a client told 2xx never loses them to a full queue or spool),
with a future for durable ones; ``offer`` takes events whose answer goes out regardless
and counts the ones it cannot keep as ``dropped``.

The sender drains the queue in batches:

- **direct**: batches go to Kafka; a batch Kafka does not acknowledge within
  ``kafka.ack_timeout`` is written to the spool instead, and the pipeline turns to
- **spooling**: batches go to the spool, so events keep their order behind what is
  already there, while the replayer sends spooled segments to Kafka oldest first and
  deletes each once acknowledged; when the spool is empty it turns back to direct.

Without a ``kafka`` section the spool is where events stay (the embedded default); a
``kafka`` section added later replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.config import Kafka
from gateway.config import Spool as SpoolConfig
from gateway.events.envelope import Event
from gateway.events.pending import (
    CannotKeep,
    EventTooLarge,
    Mode,
    Overloaded,
    _Pending,
    _Waiting,
    count_by_type,
    event_type_of,
    queued,
)
from gateway.events.spool import (
    MAX_RECORD,
    Spool,
    SpoolError,
    SpoolFull,
    open_spool,
)
from gateway.observability.health import CheckResult
from gateway.observability.metrics import Metrics

if TYPE_CHECKING:  # aiokafka is imported only with a kafka section (the spool alone needs none)
    from gateway.events.kafka import KafkaWriter
    from gateway.events.kafka_security import Failure

log = logging.getLogger("gateway.events")

T = TypeVar("T")

MAX_BATCH = 5000
RETRY_MIN, RETRY_MAX = 0.5, 30.0


class EventPipeline:
    """Owns the Kafka producer and the spool of one worker process."""

    def __init__(
        self,
        kafka: Kafka | None,
        spool: SpoolConfig,
        *,
        slot: int,
        workers: int = 1,
        queue_size: int,
        queue_bytes: int = 64 << 20,
        metrics: Metrics,
    ) -> None:
        self._kafka_config = kafka
        self._topics: dict[str, str] = {}
        self._kafka: KafkaWriter | None = None
        if kafka is not None:
            from gateway.events.kafka import KafkaWriter

            self._kafka = KafkaWriter(kafka)
        self._spool = Spool(f"{spool.dir}/worker-{slot}", spool.segment_bytes, spool.max_bytes)
        self._spool_root = Path(spool.dir)
        self._adopts = slot == 0  # worker 0 takes over spools of slots that no longer exist
        self._workers = workers
        # One thread, so spool operations run in the order they were asked for.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._queue: deque[_Pending] = deque()
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        # Larger records would be refused by Kafka on every retry and block replay.
        self._max_event = min(kafka.batch_bytes if kafka else MAX_RECORD, MAX_RECORD) - 1024
        self._queued_bytes = 0
        # Spool bytes of the queued and in-flight events: while spooling, room they need.
        self._unspooled = 0
        self._metrics = metrics
        self._mode = Mode.SPOOLING
        self._wakeup = asyncio.Event()
        self._spooling = asyncio.Event()
        self._in_flight: list[_Pending] = []
        self._spool_writes = 0
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.spool_full = False
        self._failure: Failure | None = None  # the last Kafka failure of this episode

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        recovery = await self._on_disk(
            open_spool, self._spool, self._spool_root, self._workers if self._adopts else 0
        )
        self._metrics.spool_corrupt_bytes.inc(recovery.corrupt_bytes)
        self._report_spool()
        self._set_mode(Mode.SPOOLING)
        if self._kafka is not None:
            # One bounded attempt before serving, so a healthy start goes straight to
            # Kafka; past it the replayer keeps trying while events wait in the spool.
            try:
                async with asyncio.timeout(self._kafka.config.ack_timeout):
                    await self._kafka.start()
            except Exception as exc:
                await self._kafka_failed(exc, "kafka at start")
            if self._kafka.started and not recovery.records:
                self._set_mode(Mode.DIRECT)
        self._tasks = [asyncio.ensure_future(self._run_sender())]
        if self._kafka is not None:
            self._tasks.append(asyncio.ensure_future(self._run_replayer()))

    def offer(self, event: Event, *, count_loss: bool = True) -> bool:
        """Take an event whose answer goes out whatever happens to it (pixel, redirect,
        tracked request, dead letter); False, counted as dropped, when it cannot be."""
        # Once per request: submit_all's checks unrolled, less the spool's (a loss counts).
        size = len(event.value)
        if (
            size > self._max_event
            or self._closing
            or len(self._queue) >= self._queue_size
            or self._queued_bytes + size > self._queue_bytes
        ):
            if count_loss:  # else the caller offers again (a WebSocket waits for room)
                self._metrics.observe_event(event.event_type, "dropped")
            return False
        pending = self._pending(event)
        self._queue.append(pending)
        self._queued_bytes += size
        self._unspooled += pending.stored
        self._metrics.observe_event(event.event_type, "accepted")
        self._wakeup.set()
        return True

    def submit(self, event: Event, *, durable: bool) -> asyncio.Future[None] | None:
        """Take one ingested event; see :meth:`submit_all`."""
        return self.submit_all((event,), durable=durable)

    def submit_all(self, events: Sequence[Event], *, durable: bool) -> asyncio.Future[None] | None:
        """Take all the events or none (a batch is never half accepted), and only if they
        can be kept: in the queue's bounds and, with all queued and in flight, in the
        spool's room. For ``durable``, one future that resolves once all are safe, or fails
        with :class:`SpoolFull`. Raises :class:`Overloaded` (one of its kinds saying why)
        when they are not taken; the caller answers 503 or 413."""
        if any(len(event.value) > self._max_event for event in events):
            count_by_type(self._metrics, events, "refused")
            raise EventTooLarge(f"an event is larger than {self._max_event} bytes")
        pendings = [self._pending(event) for event in events]
        size = sum(len(event.value) for event in events)
        if (
            self._closing
            or len(self._queue) + len(events) > self._queue_size
            or self._queued_bytes + size > self._queue_bytes
        ):
            count_by_type(self._metrics, events, "refused")
            raise Overloaded("event queue is full")
        stored = sum(pending.stored for pending in pendings)
        if self._mode is Mode.SPOOLING:
            if not self._has_room(stored):
                count_by_type(self._metrics, events, "refused")
                raise CannotKeep("events cannot be stored right now")
        elif self._spool.total_bytes + self._unspooled + stored > self._spool.max_bytes:
            # What is queued goes to the spool if Kafka stops answering (issue 27, D9: a
            # small spool lost acknowledged fast-mode events when Kafka froze).
            count_by_type(self._metrics, events, "refused")
            raise Overloaded("event queue is full")
        done = asyncio.get_running_loop().create_future() if durable else None
        if done is not None:
            waiting = _Waiting(done, len(events))
            for pending in pendings:
                pending.waiting = waiting
        self._queue.extend(pendings)
        self._queued_bytes += size
        self._unspooled += stored
        count_by_type(self._metrics, events, "accepted")
        self._wakeup.set()
        return done

    def _pending(self, event: Event) -> _Pending:
        return queued(event, event.topic or self._topic(event.event_type))

    def _has_room(self, stored: int) -> bool:
        """Whether the spool can take ``stored`` more bytes after everything queued and in
        flight (all of which goes to the spool while Kafka is not taking events)."""
        spool = self._spool
        if spool.total_bytes + self._unspooled + stored <= spool.max_bytes:
            self.spool_full = False
            return True
        if not self.spool_full:
            log.error("spool is full (%d bytes): refusing ingestion", spool.max_bytes)
            self.spool_full = True
        return False

    def health(self) -> CheckResult:
        if self._tasks and self._tasks[0].done() and not self._closing:
            return CheckResult(False, "event sender stopped")
        if self.spool_full:
            return CheckResult(False, "spool full: events cannot be kept")
        if self._kafka is None:
            return CheckResult(True, "spool only (no kafka configured)")
        if self._mode is Mode.DIRECT:
            return CheckResult(True, "kafka")
        failure = self._failure
        if failure is not None and failure.fatal:  # needs an operator, not patience
            return CheckResult(False, f"{failure.detail}; events are spooled")
        return CheckResult(True, "spooling: kafka unreachable or catching up")

    async def close(self, limit: float) -> None:
        """Flush: queued events to Kafka within ``limit`` seconds, whatever is left to the
        spool; then close the producer and the spool."""
        self._closing = True
        for task in self._tasks[1:]:
            task.cancel()
        sender = self._tasks[0] if self._tasks else None
        try:
            if sender is not None:
                async with asyncio.timeout(limit):
                    while (self._queue or self._in_flight) and not sender.done():
                        self._wakeup.set()
                        await asyncio.sleep(0.01)
        except TimeoutError:
            log.warning("event flush to kafka timed out; spooling %d event(s)", len(self._queue))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            leftovers = [*self._in_flight, *self._queue]
            self._in_flight, self._queue = [], deque()
            if leftovers:
                with contextlib.suppress(SpoolError):
                    await self._to_spool(leftovers)
            if self._kafka is not None:
                await self._kafka.stop()
            await self._on_disk(self._spool.close)
            self._disk.shutdown(wait=True)

    def _topic(self, event_type: str) -> str:
        topic = self._topics.get(event_type)
        if topic is None:  # once per event type: this runs for every event
            config = self._kafka_config
            topic = config.topic_for(event_type) if config is not None else "events"
            self._topics[event_type] = topic
        return topic

    async def _run_sender(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                count = min(len(self._queue), MAX_BATCH)
                self._in_flight = [self._queue.popleft() for _ in range(count)]
                batch = self._in_flight
                self._queued_bytes -= sum(len(p.record.value) for p in batch)
                await self._deliver(batch)  # never raises but for cancellation (close)
                self._unspooled -= sum(p.stored for p in batch)
                self._in_flight = []
                self._metrics.event_queue_depth.set(len(self._queue))

    async def _deliver(self, batch: list[_Pending]) -> None:
        if self._mode is Mode.DIRECT and self._kafka is not None:
            try:
                async with asyncio.timeout(self._kafka.config.ack_timeout):
                    await self._kafka.send([p.record for p in batch])
            except Exception as exc:
                await self._kafka_failed(exc, f"kafka did not take {len(batch)} event(s)")
                self._set_mode(Mode.SPOOLING)
                await self._kafka.reset()
            else:
                self._settle(batch, "delivered")
                return
        try:
            await self._to_spool(batch)
        except SpoolError as exc:
            self._settle(batch, "dropped", exc)
        except Exception as exc:  # never let one bad batch stop the sender
            log.exception("event batch could not be delivered or spooled")
            self._settle(batch, "dropped", SpoolError(str(exc)))

    async def _to_spool(self, batch: Sequence[_Pending]) -> None:
        self._spool_writes += 1
        try:
            await self._on_disk(self._spool.append, [p.record for p in batch])
        except SpoolFull:
            if not self.spool_full:
                log.error(
                    "spool is full (%d bytes): events are being dropped", self._spool.max_bytes
                )
            self.spool_full = True
            raise
        finally:
            self._spool_writes -= 1
        self._report_spool()
        self._settle(batch, "spooled")

    def _settle(
        self, batch: Sequence[_Pending], outcome: str, exc: Exception | None = None
    ) -> None:
        # Counted per type per batch: one metrics write per type, not per event.
        for event_type, n in Counter(p.event_type for p in batch).items():
            self._metrics.observe_event(event_type, outcome, n)
        for pending in batch:
            if pending.waiting is not None:
                pending.waiting.settle(exc)

    async def _run_replayer(self) -> None:
        assert self._kafka is not None
        delay = RETRY_MIN
        while True:
            await self._spooling.wait()
            try:
                if not self._kafka.started:
                    await self._kafka.start()
                    log.info("kafka connected")
                await self._replay_spool()
                delay = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._kafka_failed(exc, "kafka replay")
                await self._kafka.reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _replay_spool(self) -> None:
        """Send sealed segments oldest first; back to direct once nothing is left."""
        assert self._kafka is not None
        while True:
            segments = await self._on_disk(self._spool.sealed)
            for segment in segments:
                records = await self._on_disk(self._spool.read, segment)
                # In batch-sized pieces, each with its own deadline: a 16 MiB segment need
                # not reach Kafka within one ack_timeout.
                for start in range(0, len(records), MAX_BATCH):
                    async with asyncio.timeout(self._kafka.config.ack_timeout):
                        await self._kafka.send(records[start : start + MAX_BATCH])
                await self._on_disk(self._spool.delete, segment)
                self.spool_full = False  # room again: the next submission measures it
                for record in records:
                    self._metrics.observe_event(event_type_of(record), "replayed")
                self._report_spool()
            if segments:
                continue
            sealed_more = await self._on_disk(self._spool.rotate)
            # No await between this check and the switch: nothing can slip into the
            # spool after we saw it empty and before the sender goes direct.
            if not sealed_more and not self._spool_writes:
                self._set_mode(Mode.DIRECT)
                self._failure = None  # the episode ends when Kafka takes events again
                log.info("spool replayed; sending to kafka directly")
                return

    async def _kafka_failed(self, exc: BaseException, what: str) -> None:
        """Count a failure by its reason; log it once per episode, not every retry."""
        from gateway.events.kafka_security import diagnose

        assert self._kafka_config is not None
        failure = await diagnose(exc, self._kafka_config)
        self._metrics.producer_errors.labels(failure.reason).inc()
        if failure != self._failure:
            log.warning("%s: %s; events go to the spool meanwhile", what, failure.detail)
        self._failure = failure

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        (self._spooling.set if mode is Mode.SPOOLING else self._spooling.clear)()

    def _report_spool(self) -> None:
        self._metrics.spool_bytes.set(self._spool.total_bytes)

    async def _on_disk(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._disk, func, *args)
