"""A Sparkplug B host application's view of its edge nodes: sessions, order, gaps, duplicates.

Per edge node it keeps the session the last NBIRTH opened (bdSeq, the alias -> name map of the
node and its devices) and the next `seq` it expects (0..255, wrapping). A message is

- in order (its seq is the expected one): delivered, then any held messages that follow it;
- ahead of order: held for up to `reorder_timeout` seconds, waiting for the ones before it. If
  they do not come, the gap is declared (the missing seqs are remembered, a rebirth is asked for)
  and the held messages are delivered;
- behind: a message declared missing that arrives late is delivered; any other is a duplicate
  (QoS 1 delivers at least once) and is dropped;
- older than the current birth (its timestamp before the NBIRTH's): sent in the previous session
  and queued across a reconnection; delivered with that session's aliases, its seq ignored.

An NDEATH marks the node offline only when its bdSeq is the session's (a stale death from an older
connection is ignored); the session's aliases and seq stay valid until the next NBIRTH, since
messages sent before the death may arrive after it (a broker restart delivers them after the will).
Data from a node whose session is unknown is delivered when its metrics
carry their names, and a rebirth is asked for either way. The state is plain data, saved with
each flush, so a restarted host continues where the last flush left off.

Nothing here touches the network: the connector feeds messages in and acts on the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from linelab.connect.sparkplug.payload import BDSEQ, Message, Topic

SEQ_MODULO = 256


@dataclass
class Envelope:
    """A decoded message with what the connector needs to acknowledge it."""

    topic: Topic
    message: Message
    ref: Any = None  # the connector's handle (MQTT message id) to acknowledge once stored
    arrived: float = 0.0


@dataclass
class Session:
    bdseq: int | None = None
    expected: int | None = None  # the next seq; None: the session is not known
    aliases: dict[int, str] = field(default_factory=dict)
    born: int | None = None  # the NBIRTH's timestamp (ms)
    earlier: dict[int, str] = field(default_factory=dict)  # the previous session's aliases
    online: bool = False
    missing: list[int] = field(default_factory=list)  # seqs declared lost, delivered if they turn up
    held: dict[int, Envelope] = field(default_factory=dict)
    rebirth_asked: float | None = None  # when a rebirth was last asked for (not saved)

    def state(self) -> dict[str, Any]:
        return {"bdseq": self.bdseq, "expected": self.expected, "online": self.online, "born": self.born,
                "aliases": {str(k): v for k, v in self.aliases.items()}, "missing": list(self.missing),
                "earlier": {str(k): v for k, v in self.earlier.items()}}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Session:
        return cls(bdseq=s.get("bdseq"), expected=s.get("expected"), online=bool(s.get("online")),
                   born=s.get("born"), aliases={int(k): v for k, v in (s.get("aliases") or {}).items()},
                   earlier={int(k): v for k, v in (s.get("earlier") or {}).items()},
                   missing=[int(x) for x in s.get("missing") or []])


@dataclass
class Outcome:
    """What the host made of its input: messages to store, and what the connector must do."""

    deliver: list[Envelope] = field(default_factory=list)
    duplicates: list[Envelope] = field(default_factory=list)
    rejected: list[tuple[Envelope, str]] = field(default_factory=list)  # (message, reason)
    gaps: list[dict[str, Any]] = field(default_factory=list)  # {group, node, missing, t}
    rebirth: list[tuple[str, str]] = field(default_factory=list)  # nodes to ask for a rebirth
    deaths: list[Envelope] = field(default_factory=list)
    births: list[Envelope] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        for name in ("deliver", "duplicates", "rejected", "gaps", "rebirth", "deaths", "births"):
            getattr(self, name).extend(getattr(other, name))


def _metric_int(message: Message, name: str) -> int | None:
    v = next((v for n, v in zip(message.names, message.values, strict=True) if n == name), None)
    return int(v) if v is not None else None


class Host:
    """Edge node sessions as a Sparkplug host application tracks them."""

    def __init__(self, reorder_timeout: float = 2.0, rebirth_every: float = 5.0) -> None:
        self.reorder_timeout = reorder_timeout
        self.rebirth_every = rebirth_every  # do not ask one node for a rebirth more often than this
        self.sessions: dict[tuple[str, str], Session] = {}
        self.counts = {"delivered": 0, "duplicates": 0, "gaps": 0, "missing": 0, "late": 0, "rebirths_asked": 0,
                       "births": 0, "deaths": 0, "rejected": 0}

    # -- state saved with each flush ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"/".join(k): s.state() for k, s in self.sessions.items()}

    def restore(self, state: dict[str, Any]) -> None:
        for key, s in state.items():
            group, _, node = key.partition("/")
            self.sessions[(group, node)] = Session.from_state(s)

    # -- input ----------------------------------------------------------------------------------
    def receive(self, env: Envelope, now: float) -> Outcome:
        out = Outcome()
        t = env.topic
        session = self.sessions.setdefault(t.node_key, Session())
        msg = env.message
        if t.kind == "NDEATH":
            bdseq = _metric_int(msg, BDSEQ)
            if session.bdseq is None or bdseq is None or bdseq == session.bdseq:
                # Offline; the session's aliases and seq stay: messages the node sent before its death
                # may still be on their way (a broker restart delivers them after the will).
                session.online = False
                out.deaths.append(env)
                self.counts["deaths"] += 1
            else:
                out.duplicates.append(env)  # a stale will from an older connection
            return out
        if msg.seq is None or not 0 <= msg.seq < SEQ_MODULO:
            out.rejected.append((env, f"{t.kind} without a valid seq ({msg.seq})"))
            self.counts["rejected"] += 1
            return out
        if t.kind == "NBIRTH":
            self._release(session, out, t)
            session.bdseq = _metric_int(msg, BDSEQ)
            session.earlier = session.aliases or session.earlier
            session.born = msg.timestamp
            session.aliases = {}
            session.missing = []
            session.expected = msg.seq
            session.online = True
            session.rebirth_asked = None
            self.counts["births"] += 1
            self._in_order(session, env, out)
            return out
        if not session.online and session.expected is not None:
            self._ask_rebirth(session, t, now, out)  # it speaks after its death: its new birth was missed
        if session.expected is None:
            # No birth known: deliverable only if every metric is named; ask for a rebirth either way.
            self._ask_rebirth(session, t, now, out)
            if t.kind == "DBIRTH" or None not in msg.names:
                self._accept(session, env, out)
            else:
                out.rejected.append((env, f"{t.kind} from {t.group}/{t.node} before its birth certificate: "
                                          "metric aliases cannot be resolved"))
                self.counts["rejected"] += 1
            return out
        if session.born is not None and msg.timestamp is not None and msg.timestamp < session.born \
                and t.kind in ("NDATA", "DDATA"):
            # Sent before the current birth (queued by the node's client across a reconnection): its
            # seq belongs to the previous session, its aliases too.
            self.counts["late"] += 1
            self._accept(session, env, out, session.earlier)
            return out
        ahead = (msg.seq - session.expected) % SEQ_MODULO
        if ahead == 0:
            self._in_order(session, env, out)
        elif ahead < SEQ_MODULO // 2:
            if msg.seq in session.held:
                out.duplicates.append(env)
                self.counts["duplicates"] += 1
            else:
                env.arrived = now
                session.held[msg.seq] = env
        elif msg.seq in session.missing:
            session.missing.remove(msg.seq)  # late, not lost after all
            self.counts["late"] += 1
            self.counts["missing"] -= 1
            self._accept(session, env, out)
        else:
            out.duplicates.append(env)
            self.counts["duplicates"] += 1
        return out

    def tick(self, now: float) -> Outcome:
        """Declare the gaps whose reorder timeout has passed."""
        out = Outcome()
        for key, session in self.sessions.items():
            if session.held and min(e.arrived for e in session.held.values()) + self.reorder_timeout <= now:
                self._gap(session, Topic(key[0], "NDATA", key[1]), now, out)
        return out

    def _gap(self, session: Session, t: Topic, now: float, out: Outcome) -> None:
        assert session.expected is not None
        first = min(session.held, key=lambda s: (s - session.expected) % SEQ_MODULO)  # type: ignore[operator]
        n = (first - session.expected) % SEQ_MODULO
        lost = [(session.expected + i) % SEQ_MODULO for i in range(n)]
        session.missing = (session.missing + lost)[-SEQ_MODULO // 2:]
        self.counts["gaps"] += 1
        self.counts["missing"] += n
        out.gaps.append({"group": t.group, "node": t.node, "missing": lost, "expected": session.expected,
                         "resumed": first})
        session.expected = first
        self._drain(session, out)
        self._ask_rebirth(session, t, now, out, force=True)

    def _release(self, session: Session, out: Outcome, t: Topic) -> None:
        """Deliver what is held before the session changes, as after a gap."""
        while session.held and session.expected is not None:
            self._gap(session, t, 0.0, out)

    def _in_order(self, session: Session, env: Envelope, out: Outcome) -> None:
        self._accept(session, env, out)
        assert env.message.seq is not None
        session.expected = (env.message.seq + 1) % SEQ_MODULO
        self._drain(session, out)

    def _drain(self, session: Session, out: Outcome) -> None:
        while session.expected is not None and session.expected in session.held:
            env = session.held.pop(session.expected)
            self._accept(session, env, out)
            session.expected = (session.expected + 1) % SEQ_MODULO

    def _accept(self, session: Session, env: Envelope, out: Outcome, aliases: dict[int, str] | None = None) -> None:
        kind = env.topic.kind
        msg = env.message
        if kind in ("NBIRTH", "DBIRTH"):
            session.aliases.update((a, n) for a, n in zip(msg.aliases, msg.names, strict=True)
                                   if a is not None and n is not None)
            out.births.append(env)
            return
        if kind == "DDEATH":
            out.deaths.append(env)
            return
        if None in msg.names:
            known = session.aliases if aliases is None else aliases
            if msg.names.count(None) == len(msg.names):  # the usual data message: every metric by alias
                names = list(map(cast("dict[int | None, str]", known).get, msg.aliases))
            else:
                names = [n if n is not None else known.get(a) if a is not None else None
                         for n, a in zip(msg.names, msg.aliases, strict=True)]
            if None in names:
                alias = msg.aliases[names.index(None)]
                out.rejected.append((env, f"metric alias {alias} is not in the birth certificate"))
                self.counts["rejected"] += 1
                return
            msg.names = names
        out.deliver.append(env)
        self.counts["delivered"] += 1

    def _ask_rebirth(self, session: Session, t: Topic, now: float, out: Outcome, force: bool = False) -> None:
        if not force and session.rebirth_asked is not None and now - session.rebirth_asked < self.rebirth_every:
            return
        session.rebirth_asked = now
        out.rebirth.append(t.node_key)
        self.counts["rebirths_asked"] += 1
