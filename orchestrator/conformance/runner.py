"""Drive one device through the plan over MQTT 5, and judge every step.

The suite is a client like any other service: it subscribes to the device's `state`
and `report` topics, publishes signed bundles to its `bundle` topic (QoS 1, with a
message expiry), and waits for each bundle's reports before the next one. It takes
the device's sequence numbers from certfleet's store, so the fleet's later bundles
still count up from where the suite left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.conformance.forge import Forge
from orchestrator.conformance.inbox import Heard, Inbox, trust_of, trust_problems
from orchestrator.conformance.model import FINAL_PHASES, RESTING_PHASES, Expect, Send, Step, Trust
from orchestrator.conformance.verdict import Sent, StepResult, judge, order_problems
from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.keygen import KeygenError, parse_keygen_output
from orchestrator.protocol.mqtt import mqtt5_client
from orchestrator.protocol.topics import Topics

__all__ = ["Broker", "ConformanceError", "Runner", "connected"]


SILENT_STEPS = 3
"""Steps in a row without a single report after which the suite stops sending."""


class ConformanceError(CertfleetError):
    """The suite could not run (no broker, no state from the device)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Broker:
    """Where the suite connects, as the other certfleet services do."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None


@contextlib.asynccontextmanager
async def connected(broker: Broker, topics: Topics, inbox: Inbox) -> AsyncIterator[aiomqtt.Client]:
    """A fresh MQTT 5 session subscribed to the device's state and report topics."""
    client = mqtt5_client(
        broker.host,
        broker.port,
        client_id=f"certfleet-conformance-{uuid.uuid4().hex[:12]}",
        session_expiry=None,
        username=broker.username,
        password=broker.password,
        tls_context=broker.tls_context,
    )
    try:
        async with client:
            await client.subscribe(topics.state(inbox.device_id), qos=1)
            await client.subscribe(topics.report(inbox.device_id), qos=1)
            reader = asyncio.create_task(_read(client, topics, inbox))
            try:
                yield client
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    except aiomqtt.MqttError as exc:
        raise ConformanceError(
            f"MQTT broker {broker.host}:{broker.port}: {exc}; check CERTFLEET_MQTT_* or --broker-*"
        ) from None


async def _read(client: aiomqtt.Client, topics: Topics, inbox: Inbox) -> None:
    async for message in client.messages:
        parsed = topics.parse(str(message.topic))
        payload = message.payload
        if parsed is None or parsed[0] != inbox.device_id or not isinstance(payload, bytes):
            continue
        inbox.hear(parsed[1], payload)


class Runner:
    """Runs steps one after the other on a connected client.

    Args:
        next_seq: the device's next sequence number (certfleet's sequence store).
        step_timeout: seconds a bundle's reports, and a changed state, may take.
        certify: issues a client certificate (PEM) for a CSR (DER), for a `Send` that asks
            for one; None: such a bundle goes as the plan wrote it.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        inbox: Inbox,
        *,
        topics: Topics,
        forge: Forge,
        next_seq: Callable[[], int],
        clock: Callable[[], datetime],
        step_timeout: float,
        on_result: Callable[[StepResult], None] | None = None,
        certify: Callable[[bytes], str] | None = None,
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._topics = topics
        self._forge = forge
        self._next_seq = next_seq
        self._clock = clock
        self._timeout = step_timeout
        self._on_result = on_result
        self._certify = certify
        self._sent: dict[str, tuple[bytes, Sent]] = {}
        self._skipped: list[int] = []
        self._on_plan = True

    @property
    def inbox(self) -> Inbox:
        """What the device said so far."""
        return self._inbox

    async def send(self, send: Send, expect: Expect) -> list[Heard]:
        """Publish one bundle and return the device's reports about it, judging nothing."""
        data, bundle = self._materialize(send)
        start = len(self._inbox.reports)
        await self._publish(data)
        return await self._collect(start, bundle, expect, self._timeout)

    async def settle(self, expected: Trust) -> Trust | None:
        """Wait until the device reports `expected` (or a step timeout); its trust then."""

        def matches() -> bool:
            state = self._inbox.latest_state()
            return state is not None and trust_of(state.document or {}).same_as(expected)

        await self._inbox.wait(matches, self._timeout)
        state = self._inbox.latest_state()
        return trust_of(state.document or {}) if state is not None else None

    def _seq(self, send: Send) -> int:
        """The next sequence number, or one left out before (lower than the last one sent)."""
        if send.skip_seq:
            self._skipped.append(self._next_seq())
            return self._next_seq()
        return self._skipped.pop(0) if self._skipped else self._next_seq()

    async def run(self, steps: Sequence[Step]) -> list[StepResult]:
        """Every step, in order."""
        results = []
        silent = 0
        for step in steps:
            if silent >= SILENT_STEPS:
                result = StepResult(
                    name=step.name,
                    passed=False,
                    expected="; ".join(e.describe() for e in step.expects),
                    got="not run",
                    detail=f"the device answered none of the last {SILENT_STEPS} steps",
                )
            else:
                start = len(self._inbox.reports)
                result = await self._step(step)
                answered = len(self._inbox.reports) > start or not step.sends
                silent = 0 if answered else silent + 1
            results.append(result)
            if self._on_result is not None:
                self._on_result(result)
        return results

    def _csr_of(self, rid: str) -> bytes | None:
        """The CSR (DER) the device last reported for a keygen of rollout `rid`."""
        for heard in reversed(self._inbox.reports):
            if heard.get("phase") == "csr" and heard.get("rollout_id") == rid:
                try:
                    return parse_keygen_output(str(heard.get("csr"))).csr_der
                except KeygenError:
                    return None
        return None

    def _certified(self, send: Send) -> Send:
        """`send` carrying the certificate issued for its keygen's CSR, if there is one."""
        csr = self._csr_of(send.rid)
        if self._certify is None or csr is None:
            return send
        try:
            pem = self._certify(csr)
        except ValueError:
            return send  # not a CSR: the plan's certificate goes, and the device refuses it
        return replace(send, fields={**send.fields, "creds": [{"type": 1, "pem": pem}]})

    def _materialize(self, send: Send) -> tuple[bytes, Sent]:
        if send.certify:
            send = self._certified(send)
        if send.raw is not None:
            return send.raw, Sent(0, "", None)
        if send.resend is not None:
            return self._sent[send.resend]
        seq, now = self._seq(send), self._clock()
        document = self._forge.payload(send, seq=seq, now=now)
        data = self._forge.build(send, seq=seq, now=now)
        op = document.get("op")
        return data, Sent(seq, str(document.get("rid", "")), op if isinstance(op, str) else None)

    async def _publish(self, data: bytes) -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.MessageExpiryInterval = 3600  # the device checks exp itself; deliver
        await self._client.publish(
            self._topics.bundle(self._inbox.device_id), data, qos=1, properties=properties
        )

    def _reports_of(self, start: int, sent: Sent) -> list[Heard]:
        return [h for h in self._inbox.reports[start:] if h.get("seq") in (0, sent.seq)]

    async def _collect(self, start: int, sent: Sent, expect: Expect, timeout: float) -> list[Heard]:
        def done() -> bool:
            phases = [h.get("phase") for h in self._reports_of(start, sent)]
            return (
                any(p in FINAL_PHASES for p in phases)
                or (expect.last in RESTING_PHASES and expect.last in phases)
                or len(phases) > len(expect.phases) + 1
            )

        await self._inbox.wait(done, timeout)
        return self._reports_of(start, sent)

    async def _step(self, step: Step) -> StepResult:
        if step.pause:
            await asyncio.sleep(step.pause)
        inbox = self._inbox
        first_state = len(inbox.states)
        sent: list[Sent] = []
        heard: list[list[Heard]] = []
        starts: list[int] = []
        for send, expect in zip(step.sends, step.expects, strict=True):
            data, bundle = self._materialize(send)
            self._sent.setdefault(step.name, (data, bundle))
            starts.append(len(inbox.reports))
            await self._publish(data)
            sent.append(bundle)
            if not step.burst:
                heard.append(await self._collect(starts[-1], bundle, expect, self._wait(expect)))
        order: list[str] = []
        if step.burst:
            for start, bundle, expect in zip(starts, sent, step.expects, strict=True):
                heard.append(await self._collect(start, bundle, expect, self._wait(expect)))
            order = order_problems([h.get("seq") for h in inbox.reports[starts[0] :]], sent)
        expected = step.trust
        assert expected is not None  # noqa: S101 -- the script sets it on every step

        def matches() -> bool:
            state = inbox.latest_state()
            return state is not None and trust_of(state.document or {}).same_as(expected)

        # A device that answered otherwise than expected, or left the plan's trust in an
        # earlier step, will not reach the expected trust either: look at what it reports
        # without waiting a whole step timeout for it.
        answered_as_expected = all(
            tuple(h.get("phase") for h in reports) == expect.phases
            and reports[-1].get("reason") in expect.reasons
            for reports, expect in zip(heard, step.expects, strict=True)
        )
        patient = answered_as_expected and self._on_plan
        self._on_plan = await inbox.wait(matches, self._timeout if patient else 0.5)
        return judge(
            step,
            sent,
            heard,
            state=inbox.latest_state(),
            states_seen=inbox.states[first_state:],
            timeout=self._timeout,
            problems=order,
        )

    def _wait(self, expect: Expect) -> float:
        return self._timeout * (2 if "fallback" in expect.phases else 1)


def first_state_result(state: Heard | None, trust: Trust | None, source: str) -> StepResult:
    """The row for the device's first state: readable, v2, and a working trust set."""
    problems = []
    if state is not None:
        if state.problem:
            problems.append(state.problem)
        if state.get("v") != 2:
            problems.append(f"state v {state.get('v')!r}: this suite checks contract v2")
    if trust is not None:
        problems.extend(trust_problems(trust))
    got = f"{source}: {trust.describe()}" if trust is not None else "no state"
    return StepResult(
        name="state",
        passed=trust is not None and not problems,
        expected="a state message (v 2) whose active tags all hold a CA item",
        got=got,
        detail="; ".join(problems),
    )
