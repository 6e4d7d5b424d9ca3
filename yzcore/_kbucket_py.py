"""Pure-Python twin of :mod:`yzcore._kbucket`: the Kademlia routing table.

Buckets are indexed by the common-prefix length of a contact's id with our
own (0..255), hold at most ``k`` contacts each, and keep least-recently-seen
order through a global sighting counter (``seq``): "seen" is O(1), and the
oldest contact of a bucket is the one with the smallest ``seq``. Each bucket
has a replacement cache of candidates that arrived while it was full.

The table never pings anyone: when a bucket is full, :meth:`RoutingTable.add`
answers ``("full", oldest_id)`` and the caller decides whether to ping the
oldest contact (then :meth:`~RoutingTable.seen` or
:meth:`~RoutingTable.fail` it). A contact that fails ``max_fails`` times in a
row is evicted and the freshest eligible replacement takes its place.

Every mutating call answers a ``(status, id_or_None)`` tuple; the statuses
are the module constants below.
"""

from __future__ import annotations

from yzcore._routing_common import BUCKETS as _BUCKETS
from yzcore._routing_common import check_bucket_index, check_table_config, ip_group
from yzcore._xor_py import check_id
from yzcore.exceptions import InvalidArgument

__all__ = [
    "Contact",
    "RoutingTable",
    "ADDED",
    "UPDATED",
    "FULL",
    "REPLACED",
    "IP_LIMIT",
    "SELF",
    "STALE",
    "EVICTED",
    "REMOVED",
    "UNKNOWN",
]

ADDED = "added"  #: the contact entered its bucket
UPDATED = "updated"  #: a known contact was seen again; address and ip refreshed
FULL = "full"  #: bucket full; the id given is the oldest contact, ping it
REPLACED = "replaced"  #: bucket full, a stale contact (the id given) made room
IP_LIMIT = "ip_limit"  #: refused: the bucket holds ip_limit contacts of this /24 or /48
SELF = "self"  #: refused: our own id
STALE = "stale"  #: a failure was counted; the contact stays, marked stale
EVICTED = "evicted"  #: the contact left the table; the id given is its promoted replacement
REMOVED = "removed"  #: removed on request; the id given is its promoted replacement
UNKNOWN = "unknown"  #: no such contact

_from_bytes = int.from_bytes
_R_ADDED = (ADDED, None)
_R_UPDATED = (UPDATED, None)
_R_SELF = (SELF, None)
_R_IP_LIMIT = (IP_LIMIT, None)
_R_STALE = (STALE, None)
_R_UNKNOWN = (UNKNOWN, None)


def _cpl(a: bytes, b: bytes) -> int:
    return 256 - (_from_bytes(a, "big") ^ _from_bytes(b, "big")).bit_length()


class Contact:
    """A peer known to the routing table. Read its fields; do not assign them.

    Attributes:
        id: The 32-byte node id.
        address: Where to reach it (a URL); refreshed on every sighting.
        ip: Its IP address literal, or None when unknown.
        last_seen: ``now`` of its last sighting.
        fails: Failures counted since it was last seen.
        stale: True once a failure was counted, until it is seen again.
        meta: Merged metadata (role, capabilities...), or None.
        bucket: Index of its bucket (the common-prefix length with our id).
    """

    __slots__ = ("id", "address", "ip", "group", "last_seen", "fails", "stale", "meta", "seq", "bucket")

    def __init__(
        self, node_id: bytes, address: str, ip: str | None, group: str | None,
        now: float, seq: int, bucket: int,
    ) -> None:
        self.id = node_id
        self.address = address
        self.ip = ip
        self.group = group
        self.last_seen = now
        self.fails = 0
        self.stale = False
        self.meta: dict[str, object] | None = None
        self.seq = seq
        self.bucket = bucket

    def as_tuple(self) -> tuple[object, ...]:
        """All observable fields, for comparisons and debugging."""
        return (self.id, self.address, self.ip, self.last_seen, self.fails, self.stale,
                self.meta, self.bucket, self.seq)

    def __repr__(self) -> str:
        flag = " stale" if self.stale else ""
        return f"<Contact {self.id.hex()[:12]} {self.address} fails={self.fails}{flag}>"


class RoutingTable:
    """A Kademlia routing table around ``self_id``.

    Args:
        self_id: Our own 32-byte id.
        k: Contacts per bucket (default 20).
        replacements: Size of each bucket's replacement cache (default ``k``).
        ip_limit: At most this many contacts of one /24 (IPv4) or /48 (IPv6)
            per bucket; 0 disables the limit. Loopback is exempt.
        max_fails: Consecutive failures after which a contact is evicted.
        now: The caller's clock at creation; buckets count as refreshed then.

    Raises:
        InvalidId: ``self_id`` is not a 32-byte id.
        InvalidConfig: a size or limit is out of range.
    """

    __slots__ = ("self_id", "k", "replacements", "ip_limit", "max_fails", "_contacts",
                 "_buckets", "_cache", "_cached", "_groups", "_seq", "_created", "_refreshed")

    def __init__(
        self, self_id: bytes, k: int = 20, *, replacements: int | None = None,
        ip_limit: int = 2, max_fails: int = 3, now: float = 0.0,
    ) -> None:
        self.self_id = check_id(self_id)
        if replacements is None:
            replacements = k
        check_table_config(k, replacements, ip_limit, max_fails, now)
        self.k = k
        self.replacements = replacements
        self.ip_limit = ip_limit
        self.max_fails = max_fails
        self._contacts: dict[bytes, Contact] = {}
        # Per bucket, None until used (most of the 256 stay empty), else an
        # insertion-ordered dict: O(1) removal, and for caches O(1) move-to-end.
        self._buckets: list[dict[bytes, Contact] | None] = [None] * _BUCKETS
        self._cache: list[dict[bytes, Contact] | None] = [None] * _BUCKETS
        self._cached: dict[bytes, Contact] = {}
        self._groups: dict[int, dict[str, int]] = {}  # bucket -> {group: contacts}
        self._seq = 0
        self._created = float(now)
        self._refreshed: dict[int, float] = {}

    # -- queries -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._contacts)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._contacts

    def get(self, node_id: bytes) -> Contact | None:
        """The contact with this id, if it is in a bucket (not the replacement cache)."""
        return self._contacts.get(node_id)

    def contacts(self) -> list[Contact]:
        """Every contact in the buckets, bucket by bucket, oldest first."""
        out: list[Contact] = []
        for i in range(_BUCKETS):
            out.extend(self.bucket(i))
        return out

    def bucket(self, index: int) -> list[Contact]:
        """The contacts of one bucket, least recently seen first."""
        members = self._buckets[check_bucket_index(index)]
        return sorted(members.values(), key=_by_seq) if members else []

    def replacement_cache(self, index: int) -> list[Contact]:
        """One bucket's replacement candidates, least recently seen first."""
        members = self._cache[check_bucket_index(index)]
        return list(members.values()) if members else []

    def bucket_sizes(self) -> dict[int, int]:
        """{bucket index: number of contacts} for every non-empty bucket."""
        return {i: len(b) for i, b in enumerate(self._buckets) if b}

    def bucket_of(self, node_id: bytes) -> int:
        """The bucket an id belongs in: its common-prefix length with ours (256 = ours)."""
        return _cpl(self.self_id, check_id(node_id))

    def oldest(self, index: int) -> Contact | None:
        """The least recently seen contact of a bucket, or None when it is empty."""
        members = self._buckets[check_bucket_index(index)]
        return min(members.values(), key=_by_seq) if members else None

    def stale_contacts(self) -> list[Contact]:
        """Contacts with failures counted since they were last seen."""
        return [c for c in self._contacts.values() if c.stale]

    def nearest(self, target: bytes, k: int | None = None, *, include_stale: bool = False) -> list[Contact]:
        """The ``k`` contacts closest to ``target`` by XOR distance, nearest first.

        Reads whole buckets in order of their distance from the target and
        stops at the first that completes ``k`` candidates, so only a few
        buckets are read.

        The order: the target's own bucket ``b`` (its members share one
        more bit with the target than anyone else). Then the deeper buckets
        ``i > b``, whose members agree with us on bits ``b+1 .. i-1`` and
        differ from us at bit ``i``: where the target differs from us at bit
        ``i`` too, bucket ``i`` is nearer than every deeper one, else
        farther. So: those with that bit set in ``target ^ self``,
        shallowest first, then the others, deepest first. Last the
        shallower buckets, nearest (deepest) first.

        Raises:
            InvalidId: ``target`` is not a 32-byte id.
            InvalidArgument: ``k`` is negative.
        """
        check_id(target)
        if k is None:
            k = self.k
        elif not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidArgument(f"k must be an integer >= 0, got {k!r}.")
        found: list[Contact] = []
        buckets = self._buckets
        b = _cpl(self.self_id, target)
        t = _from_bytes(target, "big")
        x = _from_bytes(self.self_id, "big") ^ t
        deeper = [i for i in range(b + 1, _BUCKETS) if buckets[i]]
        order = [i for i in deeper if x >> (255 - i) & 1]
        order += reversed([i for i in deeper if not x >> (255 - i) & 1])
        if b < _BUCKETS:
            order.insert(0, b)
        order += range(min(b, _BUCKETS) - 1, -1, -1)
        for i in order:
            members = buckets[i]
            if members:
                if include_stale:
                    found.extend(members.values())
                else:
                    found.extend(c for c in members.values() if not c.stale)
                if len(found) >= k:
                    break
        found.sort(key=lambda c: _from_bytes(c.id, "big") ^ t)
        return found[:k]

    def due_for_refresh(self, now: float, interval: float) -> list[int]:
        """Buckets not refreshed for ``interval``, up to the deepest non-empty one."""
        deepest = max((i for i, b in enumerate(self._buckets) if b), default=0)
        created = self._created
        last = self._refreshed
        return [i for i in range(deepest + 1) if last.get(i, created) + interval <= now]

    def mark_refreshed(self, index: int, now: float) -> None:
        """Record that a lookup went through bucket ``index`` at ``now``."""
        self._refreshed[check_bucket_index(index)] = now

    # -- updates -----------------------------------------------------------

    def add(self, node_id: bytes, address: str, now: float, ip: str | None = None) -> tuple[str, bytes | None]:
        """Offer a contact we have just heard from.

        Returns:
            ``(ADDED, None)``, ``(UPDATED, None)``, ``(FULL, oldest_id)`` (the
            candidate waits in the replacement cache; ping the oldest),
            ``(REPLACED, stale_id)``, ``(IP_LIMIT, None)`` or ``(SELF, None)``.

        Raises:
            InvalidId: ``node_id`` is not a 32-byte id.
            InvalidArgument: ``ip`` is not an address literal.
        """
        if type(node_id) is not bytes or len(node_id) != 32:
            check_id(node_id)
        c = self._contacts.get(node_id)
        if c is not None:
            if ip is None or ip == c.ip or self._regroup(c, ip):
                c.address = address
            self._touch(c, now)
            return _R_UPDATED
        if node_id == self.self_id:
            return _R_SELF
        b = _cpl(self.self_id, node_id)
        group = ip_group(ip) if ip is not None else None
        if group is not None and self.ip_limit and self._group_count(b, group) >= self.ip_limit:
            return _R_IP_LIMIT
        members = self._buckets[b]
        if members is None or len(members) < self.k:
            self._uncache(node_id)
            self._insert(b, node_id, address, ip, group, now)
            return _R_ADDED
        victim = None
        for m in members.values():
            if m.stale and (victim is None or m.fails > victim.fails
                            or (m.fails == victim.fails and m.seq < victim.seq)):
                victim = m
        if victim is not None:
            self._drop(victim)
            self._uncache(node_id)
            self._insert(b, node_id, address, ip, group, now)
            return (REPLACED, victim.id)
        self._cache_put(b, node_id, address, ip, group, now)
        oldest = None
        for m in members.values():
            if oldest is None or m.seq < oldest.seq:
                oldest = m
        assert oldest is not None
        return (FULL, oldest.id)

    def seen(self, node_id: bytes, now: float) -> bool:
        """A contact answered: make it most recently seen and clear its failures.

        Returns:
            True if it is in a bucket; False otherwise (a cached candidate is
            refreshed in its cache).
        """
        c = self._contacts.get(node_id)
        if c is None:
            c = self._cached.get(node_id)
            if c is not None:
                self._cache_touch(c, now)
            return False
        self._touch(c, now)
        return True

    def fail(self, node_id: bytes, now: float) -> tuple[str, bytes | None]:
        """A request to the contact failed or timed out.

        Returns:
            ``(STALE, None)`` while it has fewer than ``max_fails`` failures;
            ``(EVICTED, promoted_id_or_None)`` when it leaves the table (a
            cached candidate that fails is dropped the same way);
            ``(UNKNOWN, None)`` for an id the table does not hold.
        """
        c = self._contacts.get(node_id)
        if c is None:
            c = self._cached.get(node_id)
            if c is None:
                return _R_UNKNOWN
            self._uncache(node_id)
            return (EVICTED, None)
        c.fails += 1
        c.stale = True
        if c.fails < self.max_fails:
            return _R_STALE
        self._drop(c)
        return (EVICTED, self._promote(c.bucket))

    def remove(self, node_id: bytes) -> tuple[str, bytes | None]:
        """Remove a contact (e.g. its connection closed for good).

        Returns:
            ``(REMOVED, promoted_id_or_None)`` or ``(UNKNOWN, None)``.
        """
        c = self._contacts.get(node_id)
        if c is None:
            if self._uncache(node_id):
                return (REMOVED, None)
            return _R_UNKNOWN
        self._drop(c)
        return (REMOVED, self._promote(c.bucket))

    def update(
        self, node_id: bytes, *, address: str | None = None, ip: str | None = None,
        meta: dict[str, object] | None = None,
    ) -> bool:
        """Merge changed peer information into a known contact (bucket or cache).

        Only the fields given change; ``meta`` is merged key by key into the
        stored metadata, never replacing it whole.

        Returns:
            False when the id is unknown.
        """
        c = self._contacts.get(node_id)
        in_bucket = c is not None
        if c is None:
            c = self._cached.get(node_id)
            if c is None:
                return False
        if ip is not None and ip != c.ip:
            if not in_bucket:
                c.group, c.ip = ip_group(ip), ip
            elif not self._regroup(c, ip):
                address = None  # not let into that group: nor to that address
        if address is not None:
            c.address = address
        if meta:
            if c.meta is None:
                c.meta = {}
            c.meta.update(meta)
        return True

    # -- internals ---------------------------------------------------------

    def _insert(self, b: int, node_id: bytes, address: str, ip: str | None,
                group: str | None, now: float) -> None:
        self._seq += 1
        self._place(Contact(node_id, address, ip, group, now, self._seq, b))

    def _place(self, c: Contact) -> None:
        """Put a (promoted) contact object into its bucket."""
        members = self._buckets[c.bucket]
        if members is None:
            members = self._buckets[c.bucket] = {}
        members[c.id] = c
        self._contacts[c.id] = c
        if c.group is not None:
            self._group_add(c.bucket, c.group, 1)

    def _drop(self, c: Contact) -> None:
        members = self._buckets[c.bucket]
        assert members is not None
        del members[c.id]
        del self._contacts[c.id]
        if c.group is not None:
            self._group_add(c.bucket, c.group, -1)

    def _group_count(self, b: int, group: str) -> int:
        counts = self._groups.get(b)
        return counts.get(group, 0) if counts else 0

    def _group_add(self, b: int, group: str, delta: int) -> None:
        counts = self._groups.get(b)
        if counts is None:
            counts = self._groups[b] = {}
        n = counts.get(group, 0) + delta
        if n:
            counts[group] = n
        else:
            del counts[group]

    def _regroup(self, c: Contact, ip: str | None) -> bool:
        group = ip_group(ip) if ip is not None else None
        if (group is not None and group != c.group and self.ip_limit
                and self._group_count(c.bucket, group) >= self.ip_limit):
            return False  # that group is full in this bucket: it keeps its former address
        if c.group is not None:
            self._group_add(c.bucket, c.group, -1)
        if group is not None:
            self._group_add(c.bucket, group, 1)
        c.group, c.ip = group, ip
        return True

    def _touch(self, c: Contact, now: float) -> None:
        """A sighting: most recently seen, failures forgiven."""
        c.last_seen, c.fails, c.stale = now, 0, False
        self._seq += 1
        c.seq = self._seq

    def _cache_put(self, b: int, node_id: bytes, address: str, ip: str | None,
                   group: str | None, now: float) -> None:
        if not self.replacements:
            return
        c = self._cached.get(node_id)
        if c is not None:
            c.address = address
            c.ip = ip
            c.group = group
            self._cache_touch(c, now)
            return
        cache = self._cache[b]
        if cache is None:
            cache = self._cache[b] = {}
        self._seq += 1
        c = Contact(node_id, address, ip, group, now, self._seq, b)
        cache[node_id] = c
        self._cached[node_id] = c
        if len(cache) > self.replacements:
            del self._cached[cache.pop(next(iter(cache))).id]

    def _cache_touch(self, c: Contact, now: float) -> None:
        cache = self._cache[c.bucket]
        assert cache is not None
        del cache[c.id]
        cache[c.id] = c
        self._touch(c, now)

    def _uncache(self, node_id: bytes) -> bool:
        c = self._cached.pop(node_id, None)
        if c is None:
            return False
        cache = self._cache[c.bucket]
        assert cache is not None
        del cache[node_id]
        return True

    def _promote(self, b: int) -> bytes | None:
        """Move the freshest eligible replacement of bucket ``b`` into it."""
        cache = self._cache[b]
        if not cache:
            return None
        limit = self.ip_limit
        for c in reversed(cache.values()):
            if c.group is None or not limit or self._group_count(b, c.group) < limit:
                del cache[c.id]
                del self._cached[c.id]
                self._place(c)
                return c.id
        return None


def _by_seq(c: Contact) -> int:
    return c.seq
