"""Dead letters: rejected records sent to the dead-letter topic, at least once, never lost.

A :class:`DeadLetter` is kept by the partition claim it was read under
(:class:`ingest.ownership.OwnedPartition`) from the moment it is sent until the flush that
moves the partition's offset past it. Before that flush, :meth:`DeadLetterQueue.confirm`
waits for the broker's acknowledgement of every pending letter and sends again the ones that
failed; while any is unconfirmed the partition's offset does not move (the flush is held), so
a dead letter the broker never took is never skipped: it is retried, or read again from Kafka
by the partition's next owner.

Example
-------
>>> letter = DeadLetter.of(b"oops", None, [], "events", 3, 17, "invalid_json", "not JSON")
>>> letter.source, dict(letter.headers)["sketchgen-reject-reason"]
('events:3:17', b'invalid_json')
"""

from __future__ import annotations

import dataclasses
import logging
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

log = logging.getLogger(__name__)

REASON_HEADER = "sketchgen-reject-reason"
DETAIL_HEADER = "sketchgen-reject-detail"
SOURCE_HEADER = "sketchgen-source"

#: Room for the key and headers beside a forwarded value: the producer's request limit is the
#: largest value forwarded plus this, and so must be the dead-letter topic's ``max.message.bytes``.
HEADROOM_BYTES = 1 << 20


def max_dead_letter_bytes(max_value_bytes: int) -> int:
    """The largest dead-letter record a worker forwarding values up to ``max_value_bytes`` sends."""
    return int(max_value_bytes) + HEADROOM_BYTES


@dataclasses.dataclass(eq=False)
class DeadLetter:
    """One rejected record as it goes to the dead-letter topic, and the broker's answer so far."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    source: str  # "topic:partition:offset" of the rejected record
    future: object | None = None  # kafka-python's FutureRecordMetadata of the last send

    @classmethod
    def of(
        cls, value: bytes | None, key: bytes | None, headers: list | None, topic: str, partition: int, offset: int,
        reason: str, detail: str, max_value_bytes: int = 1 << 30,
    ) -> DeadLetter:
        """The dead letter of a rejected record: its value (empty when too large) and key, headers + reason."""
        source = f"{topic}:{partition}:{offset}"
        tagged = [
            *(headers or []),
            (REASON_HEADER, reason.encode()),
            (DETAIL_HEADER, detail[:500].encode("utf-8", "replace")),
            (SOURCE_HEADER, source.encode()),
        ]
        kept = value if value is not None and len(value) <= max_value_bytes else b""
        return cls(kept, key, tagged, source)

    @property
    def confirmed(self) -> bool:
        """True once the broker acknowledged the last send."""
        f = self.future
        return f is not None and f.is_done and not f.failed()  # type: ignore[attr-defined]

    def error(self) -> str | None:
        """Why the last send failed (None while it is in flight or when it succeeded)."""
        f = self.future
        if f is None:
            return "not sent"
        if f.is_done and f.failed():  # type: ignore[attr-defined]
            return f"{type(f.exception).__name__}: {f.exception}"  # type: ignore[attr-defined]
        return None if f.is_done else "no acknowledgement yet"  # type: ignore[attr-defined]


class DeadLetterQueue:
    """Sends dead letters to one topic and confirms them (see module docstring)."""

    #: After a failed confirmation, wait this long before trying again (doubling up to ``MAX_BACKOFF_S``).
    FIRST_BACKOFF_S = 1.0
    MAX_BACKOFF_S = 30.0

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.last_error: str | None = None
        self._backoff = 0.0
        self._retry_at = 0.0

    def send(self, letter: DeadLetter) -> None:
        """Hand ``letter`` to the producer; a send that fails at once is retried by :meth:`confirm`."""
        try:
            letter.future = self.producer.send(self.topic, value=letter.value, key=letter.key, headers=letter.headers)
        except KafkaError as exc:  # metadata unavailable, buffer full...: keep it, retry before the flush
            letter.future = None
            log.warning("sending the dead letter of %s failed (%s); will retry", letter.source, exc)

    def confirm(self, letters: list[DeadLetter], timeout_s: float = 30.0) -> str | None:
        """Wait for every letter's acknowledgement, resending failed ones once; None if all are confirmed.

        Returns the first error otherwise (the caller then holds the partition's offset and
        calls again at its next flush).
        """
        if not letters:
            return None
        if self.last_error is not None and time.monotonic() < self._retry_at:
            return self.last_error  # backing off: the offsets stay held
        for attempt in range(2):
            for letter in letters:
                if letter.future is None or (letter.future.is_done and letter.future.failed()):  # type: ignore
                    self.send(letter)
            try:
                self.producer.flush(timeout=timeout_s)
            except KafkaError as exc:
                log.warning("flushing dead letters failed (%s)", exc)
            errors = [e for e in map(DeadLetter.error, letters) if e is not None]
            if not errors:
                if self.last_error is not None:
                    log.info("the dead-letter topic %s takes records again", self.topic)
                self.last_error, self._backoff = None, 0.0
                return None
            if attempt == 0:
                log.warning("%d dead letters to %s failed (%s); sending them again", len(errors), self.topic,
                            errors[0])
        self.last_error = f"the dead-letter topic {self.topic} cannot be written: {errors[0]}"
        self._backoff = min(self.MAX_BACKOFF_S, max(self.FIRST_BACKOFF_S, 2 * self._backoff))
        self._retry_at = time.monotonic() + self._backoff
        log.error("%s; holding the offsets of the partitions of %d dead letters, retrying in %.0f s",
                  self.last_error, len(errors), self._backoff)
        return self.last_error
