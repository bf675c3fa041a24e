"""The delivery worker: claims due deliveries, sends each through its channel, records the outcome.

Every channel is a transport (gateway/transport.py) found by name: ``local`` (a receiver served by this
hub), an adapter (``http``, ``edi2``, ...), ``ehr:folder`` / ``ehr:callback`` (a received message handed to
the local EHR). A channel that carries CMS gets the message signed and encrypted first; one that carries
plain XML gets the XML. A channel with no transport (``unroutable``) is dead at once.

Failures are read from the exception (the error tree): retryable ones are rescheduled by the route's
retry policy until its attempts or time to live run out; the rest are dead at once with their code.
Unknown exceptions are retried, never reported to a sender. Per route (receiver HER-id): at most
``concurrency`` sends at a time, and a circuit breaker that opens after consecutive *transport*
failures (not our own problems: a CRL out of reach, a store hiccup), lets one probe through at the
backoff interval, and logs one ``route.down`` and one ``route.up`` per incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from gateway.clock import Clock
from gateway.config import Settings
from gateway.errors import (
    GatewayError,
    NoRoute,
    PermanentDeliveryError,
    TransportError,
    UnexpectedError,
)
from gateway.log import get_logger
from gateway.registry import Register
from gateway.retry import RetryPolicy, policy_for
from gateway.routing import Router
from gateway.security.protection import MessageProtection
from gateway.store.base import Claim, DeliveryState, Store
from gateway.transport import Packet, Transport

__all__ = ["Breaker", "DeliveryWorker"]

log = get_logger(__name__)

_TRANSPORT_ID = uuid.UUID("6f1c1f0e-3b1a-4c55-9a8e-5b9d3f2c7a10")


@dataclass
class _RouteHealth:
    failures: int = 0
    open_until: float = 0.0
    down_since: float | None = None
    probes: int = 0


class Breaker:
    """Per-route circuit breaker: open after ``threshold`` consecutive failures, probed at the backoff."""

    def __init__(self, threshold: int, clock: Clock) -> None:
        self.threshold = threshold
        self.clock = clock
        self.routes: dict[str, _RouteHealth] = {}

    def is_open(self, route: str) -> bool:
        health = self.routes.get(route)
        return health is not None and health.open_until > self.clock.now()

    def probing(self, route: str) -> bool:
        """Down, but the wait is over: one send may try whether the route is back."""
        health = self.routes.get(route)
        return health is not None and health.down_since is not None and not self.is_open(route)

    def success(self, route: str) -> None:
        health = self.routes.pop(route, None)
        if health is not None and health.down_since is not None:
            log.info(
                "route.up", route=route, down_s=round(self.clock.now() - health.down_since, 1), probes=health.probes
            )

    def failure(self, route: str, *, retry_in: float, reason: str, code: str) -> None:
        health = self.routes.setdefault(route, _RouteHealth())
        health.failures += 1
        if health.failures < self.threshold:
            return
        now = self.clock.now()
        if health.down_since is None:
            health.down_since = now
            log.error(
                "route.down", code="route.down", route=route, failures=health.failures, reason=reason, error_code=code
            )
        else:
            health.probes += 1
        health.open_until = now + retry_in


class DeliveryWorker:
    def __init__(
        self,
        *,
        store: Store,
        register: Register,
        settings: Settings,
        protection: MessageProtection,
        transports: Mapping[str, Transport],
        router: Router,
        clock: Clock,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.register = register
        self.settings = settings
        self.protection = protection
        self.transports = transports
        self.router = router
        self.clock = clock
        self.owner = owner or f"worker-{uuid.uuid4().hex[:8]}"
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.breaker = Breaker(settings.retry.breaker_threshold, clock)
        self._policies: dict[str, RetryPolicy] = {}
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_route: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New work was stored: look for it now instead of at the next poll."""
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and send until :meth:`stop`. Nothing but stop() ends this loop: a failing round is
        logged and the next one goes ahead."""
        self._loop = asyncio.current_task()
        delivery = self.settings.delivery
        while not self._stopping:
            try:
                started = await self.run_once()
            except GatewayError as exc:  # the store is briefly unavailable: wait and go on
                log.warning("worker.claim_failed", code=exc.event, error=exc.message)
                started = 0
            except Exception:
                log.exception("worker.claim_failed", code="worker.claim_failed")
                started = 0
            if started == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delivery.poll_interval_s)
            elif len(self._inflight) >= delivery.concurrency:
                await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def run_once(self) -> int:
        """Claim what is due now and start sending it; returns how many sends were started."""
        delivery = self.settings.delivery
        room = delivery.concurrency - len(self._inflight)
        if room <= 0 or self._stopping:
            return 0
        claims = await self.store.claim_due(
            owner=self.owner,
            now=self.clock.now(),
            limit=min(room, delivery.batch),
            lease_s=delivery.lease_s,
            exclude_routes=[route for route in self.breaker.routes if self.breaker.is_open(route)],
            route_limits=self._route_limits(),
            skip=list(self._inflight),
        )
        if self._stopping:  # stop() came while claiming: give them back untouched
            await self.store.release_leases(self.owner, now=self.clock.now())
            return 0
        for claim in claims:
            route = claim.delivery.receiver_her
            self._per_route[route] += 1
            task = asyncio.create_task(self._process(claim), name=f"deliver:{claim.delivery.id}")
            self._inflight[claim.delivery.id] = task
            task.add_done_callback(self._on_done(claim.delivery.id, route))
        return len(claims)

    def _route_limits(self) -> dict[str, int]:
        """How many more sends each route may take now: its concurrency less what is in flight, and a
        single probe while its circuit is finding out whether the peer is back."""
        limits = {}
        for route in {p.her_id for p in self.register} | set(self._per_route) | set(self.breaker.routes):
            allowed = 1 if self.breaker.probing(route) else self._policy(route).concurrency
            limits[route] = max(0, allowed - self._per_route[route])
        return limits

    def _policy(self, route: str) -> RetryPolicy:
        """The route's retry policy; settings do not change while the worker runs, so each is made once."""
        policy = self._policies.get(route)
        if policy is None:
            policy = self._policies[route] = policy_for(self.settings.retry, route)
        return policy

    def _on_done(self, delivery_id: int, route: str) -> Callable[[asyncio.Task[None]], None]:
        return lambda _task: self._done(delivery_id, route)

    def _done(self, delivery_id: int, route: str) -> None:
        self._inflight.pop(delivery_id, None)
        self._per_route[route] -= 1
        if self._per_route[route] <= 0:
            del self._per_route[route]
        self._wake.set()

    async def drain(self) -> None:
        """Run until nothing is due or in flight (tests and the replay harness)."""
        while True:
            started = await self.run_once()
            if self._inflight:
                await asyncio.wait(list(self._inflight.values()))
            elif started == 0:
                return

    async def stop(self) -> None:
        """Stop claiming; wait for in-flight sends up to the grace period; release what is left."""
        self._stopping = True
        self._wake.set()
        if self._loop is not None and self._loop is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop  # the loop sees _stopping and leaves after its current round
        if self._inflight:
            _done, pending = await asyncio.wait(
                list(self._inflight.values()), timeout=self.settings.delivery.shutdown_grace_s
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        released = await self.store.release_leases(self.owner, now=self.clock.now())
        log.info("worker.stopped", owner=self.owner, released=released)

    # -- one delivery -------------------------------------------------------------------------------

    async def _process(self, claim: Claim) -> None:
        d, m = claim.delivery, claim.message
        with structlog.contextvars.bound_contextvars(
            message_id=m.id,
            direction=str(m.direction),
            kind=m.kind,
            sender=m.sender_her,
            receiver=d.receiver_her,
            attempt=d.attempts,
            channel=d.channel,
        ):
            if d.expires_at is not None and self.clock.now() > d.expires_at:
                await self._give_up(claim, "message.expired", "its time to live ran out before it could be sent")
                return
            try:
                await self._send(claim)
            except asyncio.CancelledError:
                raise  # shutting down: the lease is released, the delivery comes back
            except GatewayError as exc:
                await self._failed(claim, exc)
            except Exception as exc:  # unknown: retried, never reported to the sender
                log.exception("delivery.unexpected_error", code="delivery.unexpected_error")
                await self._failed(claim, UnexpectedError(f"unexpected {type(exc).__name__}: {exc}"))
            else:
                await self._succeeded(claim)

    async def _send(self, claim: Claim) -> None:
        d, m = claim.delivery, claim.message
        transport = self.transports.get(d.channel)
        if transport is None:
            raise NoRoute(f"No {d.channel} channel reaches {d.receiver_her}: no such transport is configured.")
        if not claim.payload:
            raise PermanentDeliveryError(f"Message {m.id} has no document left to send (pruned).")
        body, content_type = claim.payload, "application/xml"
        if transport.carries == "cms":
            if m.sender_her:  # (without one, protecting fails below and says why)
                await transport.prepare(m.sender_her, d.receiver_her)
            body = await asyncio.to_thread(
                self.protection.protect,
                claim.payload,
                sender_her=m.sender_her or "",
                receiver_her=d.receiver_her,
                at=datetime.fromtimestamp(self.clock.now(), UTC),
            )
            content_type = self.protection.content_type
        destination = self.router.for_delivery(d.receiver_her, d.channel).destination
        packet = self._packet(claim, body, content_type, destination)
        try:
            await asyncio.wait_for(transport.send(packet), timeout=self.settings.delivery.send_timeout_s)
        except TimeoutError:
            raise TransportError(
                f"{d.channel} send to {destination or d.receiver_her} timed out after "
                f"{self.settings.delivery.send_timeout_s:g} s"
            ) from None

    def _packet(self, claim: Claim, body: bytes, content_type: str, destination: str) -> Packet:
        # a new transport message id for each attempt (HITS 1216 §2.2.5: a resend gets a new messageId,
        # the MsgId stays); the receiver finds duplicates by sender and MsgId, not by this id
        key = f"{claim.message.id}:{claim.delivery.id}:{claim.delivery.attempts}"
        return Packet(
            body=body,
            message_id=str(uuid.uuid5(_TRANSPORT_ID, key)),
            from_her=claim.message.sender_her or "",
            to_her=claim.delivery.receiver_her,
            content_type=content_type,
            subject=claim.message.msg_type or "",
            application_timestamp=datetime.fromtimestamp(self.clock.now(), UTC),
            destination=destination,
            reference=claim.message.id,
            msg_id=claim.message.msg_id or "",
            kind=claim.message.kind or "",
        )

    async def _succeeded(self, claim: Claim) -> None:
        d = claim.delivery
        transport = self.transports.get(d.channel)
        completed = transport is not None and transport.completes
        state = DeliveryState.DELIVERED if completed else DeliveryState.SENT
        reason = f"handed to the EHR ({d.channel})" if completed else f"sent via {d.channel} on attempt {d.attempts}"
        recorded = await asyncio.shield(
            self.store.mark_sent(d.id, owner=self.owner, now=self.clock.now(), reason=reason, state=state)
        )
        self.breaker.success(d.receiver_her)
        if recorded:
            log.info(f"delivery.{state}")

    async def _failed(self, claim: Claim, exc: GatewayError) -> None:
        d = claim.delivery
        now = self.clock.now()
        code = (exc.peer_code if isinstance(exc, PermanentDeliveryError) and exc.peer_code else None) or (
            exc.apprec_code or exc.event
        )
        policy = self._policy(d.receiver_her)
        if not exc.retryable:
            error = exc.message
            if isinstance(exc, PermanentDeliveryError) and exc.peer_condition:
                error += f" (transport condition {exc.peer_condition})"
            if await asyncio.shield(self.store.mark_dead(d.id, owner=self.owner, now=now, code=code, error=error)):
                log.error("delivery.dead", code=exc.event, error_code=code)
            return
        retry_after = exc.retry_after_s if isinstance(exc, TransportError) else None
        attempt = d.attempts
        if isinstance(exc, TransportError) and exc.route_failure:  # the route itself failed: the breaker counts it
            wait = max(policy.delay(d.attempts, self.rng), retry_after or 0.0)
            self.breaker.failure(d.receiver_her, retry_in=wait, reason=exc.message, code=exc.event)
        elif isinstance(exc, TransportError):  # our standing with the network: it waits for the fix, within its TTL
            attempt = min(d.attempts, policy.max_attempts - 1)
        when = policy.next_attempt_at(
            attempt=attempt, now=now, expires_at=d.expires_at, rng=self.rng, not_before_s=retry_after
        )
        if when is None:
            why = "its time to live ran out" if d.attempts < policy.max_attempts else f"{d.attempts} attempts"
            await self._give_up(claim, code, f"given up after {why}: {exc.message}")
            return
        recorded = await asyncio.shield(
            self.store.reschedule(d.id, owner=self.owner, now=now, next_attempt_at=when, code=code, error=exc.message)
        )
        if recorded:
            log.warning("delivery.retrying", code=exc.event, next_attempt_in_s=round(when - now, 1))

    async def _give_up(self, claim: Claim, code: str, error: str) -> None:
        now = self.clock.now()
        if await asyncio.shield(
            self.store.mark_dead(claim.delivery.id, owner=self.owner, now=now, code=code, error=error)
        ):
            log.error("delivery.dead", code="delivery.given_up", error_code=code, attempts=claim.delivery.attempts)
