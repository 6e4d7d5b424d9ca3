"""Relaying: splice a dialer's WebSocket to a peer that cannot be dialled (A1.5, B4.5).

A connection whose first frame is ``relay`` names a peer; the node asks that
peer, over the peer's own verified connection, to connect back (``relay_open``
with a token), and splices the two connections once it does (``relay_accept``
with the token), answering the dialer ``relay_ready``. Relayed bytes are
forwarded unchanged and the signed hello on top is end to end, so the relay
cannot pose as either side. Bridges relay for anyone connected to them;
server nodes relay for browser-class peers only, which is how traffic reaches
a browser-class peer when WebRTC to it fails (see ``docs/reference/webrtc.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio

from yzcore import wire
from yzcore.exceptions import ConnectionClosed, TransportError, WireError
from yzcore.runtime.peer import PeerConnection, source_of, tell, tell_late
from yzcore.transport import Connection, PushConnection
from yzcore.wire import ErrorCode

__all__ = ["MAX_RELAYS", "MAX_RELAYS_PER_PEER", "MAX_RELAYS_PER_SOURCE", "RELAY_ANSWER_TIMEOUT",
           "Relaying"]

# Seconds the relayed peer has to connect back: less than a dialer's 5 s, so that it
# hears the refusal (RELAY_UNAVAILABLE) rather than give up first (CONNECT_FAILED).
RELAY_ANSWER_TIMEOUT = 3.5
MAX_RELAYS = 1024  # spliced connections at once
MAX_RELAYS_PER_PEER = 64
# Relays from one address at once (not counted behind a proxy, which hides it): a
# relayed peer answers at most 16 at once (MAX_RELAY_ANSWERS), each held until the
# dialer's hello or the handshake timeout, so one client that never says hello
# kept 16 open and no one else could reach that peer.
MAX_RELAYS_PER_SOURCE = 8


class Relaying:
    """The relay half of a server node (a mixin of :class:`~yzcore.runtime.node.Node`)."""

    def _relays_for(self, pc: PeerConnection) -> bool:
        """Whether this node relays for ``pc``'s peer (a bridge's job), so must keep it."""
        return False

    def _relay_init(self) -> None:
        # token -> (answered, [(the peer's connection, set when the splice ends)])
        self._waiting: dict[bytes, tuple[anyio.Event, list[tuple[Connection, anyio.Event]]]] = {}
        self.relays: dict[bytes, int] = {}  # spliced connections per relayed peer
        self._relay_sources: dict[str, int] = {}  # relays per dialer's address
        self.relayed_frames = 0
        self._relay_lock = anyio.Lock()  # one move to a bridge at a time (recovery)
        self._relay_answers = 0  # relayed dials being answered now (recovery)

    def relay_status(self) -> dict[str, int]:
        """For ``/status``: connections spliced now, the peers they reach, frames relayed."""
        return {"relays": sum(self.relays.values()), "relayed_peers": len(self.relays),
                "relayed_frames": self.relayed_frames}

    def _may_relay(self, pc: PeerConnection) -> bool:
        """Whether this node relays to ``pc``'s peer: browser-class peers only (bridges: all)."""
        return pc.info.role == "browser"

    async def _inbound(self, conn: Connection, first: bytes | None = None) -> None:
        """Every inbound connection: a relay request, a relayed peer connecting back, or a hello."""
        if first is None:
            with anyio.move_on_after(self.handshake_timeout):
                try:
                    first = await conn.receive()
                except TransportError:
                    return
            if first is None:
                self._record(str(ErrorCode.HANDSHAKE_TIMEOUT), None,
                             f"inbound connection from {conn.remote_address} sent nothing "
                             f"within {self.handshake_timeout:g} s", transport=conn.transport,
                             throttle=True)
                await tell_late(conn, self.handshake_timeout)
                return
        msg = None  # a hello, most of the time: the handshake decodes it (once)
        if b'"relay' in first:
            try:
                msg = wire.decode(first)
            except WireError:
                pass  # the handshake answers it with its code
        if isinstance(msg, wire.RelayConnect):
            await self._relay_dialer(conn, msg.to)
        elif isinstance(msg, wire.RelayAccept):
            await self._relay_target(conn, msg.token)
        else:
            await self._accepted(conn, first)

    async def _refuse(self, conn: Connection, text: str, advice: str | None = None) -> None:
        self._record(str(ErrorCode.RELAY_UNAVAILABLE), None, text, throttle=True)
        advice = advice or wire.advice(ErrorCode.RELAY_UNAVAILABLE)
        await tell(conn, wire.Error(None, ErrorCode.RELAY_UNAVAILABLE, f"{text}. {advice}"))
        await conn.close()

    async def _relay_dialer(self, conn: Connection, target: bytes) -> None:
        pc = self.conns.get(target)
        if pc is None or not self._may_relay(pc):
            await self._refuse(conn, f"relay to {target.hex()[:16]} from {conn.remote_address}: "
                               "that peer holds no connection to this node, or is not one it "
                               "relays for")
            return
        if sum(self.relays.values()) >= MAX_RELAYS or self.relays.get(target, 0) >= MAX_RELAYS_PER_PEER:
            await self._refuse(conn, f"relay to {target.hex()[:16]}: too many relayed connections")
            return
        source = source_of(conn)
        if source is not None and self._relay_sources.get(source, 0) >= MAX_RELAYS_PER_SOURCE:
            await self._refuse(conn, f"relay to {target.hex()[:16]}: {MAX_RELAYS_PER_SOURCE} "
                               f"relays from {source} wait for their dialer's hello already",
                               "Retry in a few seconds: a relay counts until its dialer's hello "
                               "and auth went through.")
            return
        # The slots are taken now, not once spliced: a burst of requests cannot
        # pass the checks together, and a waiting request counts too. The source's
        # is given back once the dialer's hello and auth went through the splice: the
        # relayed peer holds one of its few answers until then.
        self.relays[target] = self.relays.get(target, 0) + 1
        if source is not None:
            self._relay_sources[source] = self._relay_sources.get(source, 0) + 1
        held = source is not None

        def answered() -> None:
            nonlocal held
            if held:
                held = False
                self._relay_sources[source] -= 1  # type: ignore[index]
                if not self._relay_sources[source]:  # type: ignore[index]
                    del self._relay_sources[source]  # type: ignore[arg-type]

        try:
            await self._relay(conn, target, pc, answered)
        finally:
            self.relays[target] -= 1
            if not self.relays[target]:
                del self.relays[target]
            answered()

    async def _relay(self, conn: Connection, target: bytes, pc: PeerConnection,
                     answered: Callable[[], None]) -> None:
        token = os.urandom(16)
        event = anyio.Event()
        slot: list[tuple[Connection, anyio.Event]] = []
        self._waiting[token] = (event, slot)
        pc.send(wire.RelayOpen(token))
        with anyio.move_on_after(RELAY_ANSWER_TIMEOUT):
            await event.wait()
        self._waiting.pop(token, None)
        if not slot:
            await self._refuse(conn, f"relay to {target.hex()[:16]}: the peer did not connect back "
                               f"within {RELAY_ANSWER_TIMEOUT:g} s")
            return
        other, done = slot[0]
        crashed = False  # (cancelled: this bridge stops, and says goodbye to both)
        try:
            await conn.send(wire.encode(wire.RelayReady()))
            crashed = await self._splice(conn, other, answered)
        except TransportError:
            crashed = True
        finally:
            # One end crashed: so does the other, as it would see a direct connection go
            # (a clean close here told it "goodbye", and its peer never counted as failed).
            for end in (conn, other) if crashed else ():
                if isinstance(end, PushConnection):
                    end.abort()
            with anyio.CancelScope(shield=True):
                await conn.close()
                await other.close()
            done.set()

    async def _relay_target(self, conn: Connection, token: bytes) -> None:
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            await conn.close()  # unknown or late: the dialer gave up
            return
        event, slot = waiting
        done = anyio.Event()
        slot.append((conn, done))
        event.set()
        await done.wait()  # the dialer's handler splices; this one keeps the connection open

    async def _splice(self, a: Connection, b: Connection, answered: Callable[[], None]) -> bool:
        """Pass frames both ways until either end closes (``answered()`` once ``a`` sent two:
        a dialer's hello and auth); whether that end crashed (no clean close: 1006, a reset,
        a timeout) rather than said goodbye."""
        crashed = False

        async def pump(src: Connection, dst: Connection) -> None:
            nonlocal crashed
            sent = 0
            try:
                while True:
                    frame = await src.receive()
                    await dst.send(frame)
                    self.relayed_frames += 1
                    sent += 1
                    if sent == 2 and src is a:
                        answered()
            except ConnectionClosed as exc:
                crashed = crashed or exc.close_code not in (1000, 1001)
            except TransportError:
                crashed = True
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, a, b)
            tg.start_soon(pump, b, a)
        return crashed
