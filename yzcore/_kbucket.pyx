# cython: language_level=3
"""Compiled twin of :mod:`yzcore._kbucket_py`: the Kademlia routing table.

The algorithm, statuses and results are exactly those of the pure twin (read
its module docstring); only the data structures are typed.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport PyObject
from libc.stdint cimport uint32_t
from libcpp.vector cimport vector

from yzcore._bits cimport YzDist, yz_cpl, yz_dist_set, yz_select_k

from yzcore._routing_common import check_bucket_index, check_table_config, ip_group
from yzcore._xor_py import check_id as _check_id_slow
from yzcore.exceptions import InvalidArgument

__all__ = [
    "Contact", "RoutingTable", "ADDED", "UPDATED", "FULL", "REPLACED", "IP_LIMIT",
    "SELF", "STALE", "EVICTED", "REMOVED", "UNKNOWN",
]

ADDED = "added"
UPDATED = "updated"
FULL = "full"
REPLACED = "replaced"
IP_LIMIT = "ip_limit"
SELF = "self"
STALE = "stale"
EVICTED = "evicted"
REMOVED = "removed"
UNKNOWN = "unknown"

cdef enum:
    NBUCKETS = 256

cdef tuple _R_ADDED = (ADDED, None)
cdef tuple _R_UPDATED = (UPDATED, None)
cdef tuple _R_SELF = (SELF, None)
cdef tuple _R_IP_LIMIT = (IP_LIMIT, None)
cdef tuple _R_STALE = (STALE, None)
cdef tuple _R_UNKNOWN = (UNKNOWN, None)


cdef inline const unsigned char* _ptr(object node_id) except NULL:
    if type(node_id) is not bytes or PyBytes_GET_SIZE(node_id) != 32:
        _check_id_slow(node_id)  # raises InvalidId with the standard message
    return <const unsigned char*>PyBytes_AS_STRING(node_id)


@cython.final
@cython.freelist(64)
cdef class Contact:
    """A peer known to the routing table (see the pure twin for the fields)."""

    cdef readonly bytes id
    cdef readonly object address
    cdef readonly object ip
    cdef readonly object group
    cdef readonly double last_seen
    cdef readonly int fails
    cdef readonly bint stale
    cdef readonly object meta
    cdef readonly long long seq
    cdef readonly int bucket

    def as_tuple(self):
        """All observable fields, for comparisons and debugging."""
        return (self.id, self.address, self.ip, self.last_seen, self.fails, self.stale,
                self.meta, self.bucket, self.seq)

    def __repr__(self):
        flag = " stale" if self.stale else ""
        return f"<Contact {self.id.hex()[:12]} {self.address} fails={self.fails}{flag}>"


cdef Contact _new_contact(bytes node_id, object address, object ip, object group,
                          double now, long long seq, int bucket):
    cdef Contact c = Contact.__new__(Contact)
    c.id = node_id
    c.address = address
    c.ip = ip
    c.group = group
    c.last_seen = now
    c.fails = 0
    c.stale = False
    c.meta = None
    c.seq = seq
    c.bucket = bucket
    return c


def _by_seq(Contact c):
    return c.seq


@cython.final
cdef class RoutingTable:
    """A Kademlia routing table around ``self_id`` (see the pure twin's docs)."""

    cdef readonly bytes self_id
    cdef readonly int k
    cdef readonly int replacements
    cdef readonly int ip_limit
    cdef readonly int max_fails
    cdef const unsigned char* _self
    cdef dict _contacts
    cdef list _buckets
    cdef list _cache
    cdef dict _cached
    cdef dict _groups
    cdef long long _seq
    cdef double _created
    cdef dict _refreshed

    def __init__(self, self_id, k=20, *, replacements=None, ip_limit=2, max_fails=3, now=0.0):
        _ptr(self_id)
        if replacements is None:
            replacements = k
        check_table_config(k, replacements, ip_limit, max_fails, now)
        self.self_id = self_id
        self._self = <const unsigned char*>PyBytes_AS_STRING(self_id)
        self.k = k
        self.replacements = replacements
        self.ip_limit = ip_limit
        self.max_fails = max_fails
        self._contacts = {}
        self._buckets = [None] * NBUCKETS
        self._cache = [None] * NBUCKETS
        self._cached = {}
        self._groups = {}
        self._seq = 0
        self._created = float(now)
        self._refreshed = {}

    def __reduce__(self):
        # Cython's own pickling took ``_self`` for a C string: cut at the id's first zero
        # byte, then pointing into a freed object. Rebuilt from the id instead.
        return (_rebuild_table, (self.self_id, self.k, self.replacements, self.ip_limit,
                                 self.max_fails, self._contacts, self._buckets, self._cache,
                                 self._cached, self._groups, self._seq, self._created,
                                 self._refreshed))

    # -- queries -----------------------------------------------------------

    def __len__(self):
        return len(self._contacts)

    def __contains__(self, node_id):
        return node_id in self._contacts

    def get(self, node_id):
        """The contact with this id, if it is in a bucket (not the replacement cache)."""
        return self._contacts.get(node_id)

    def contacts(self):
        """Every contact in the buckets, bucket by bucket, oldest first."""
        out = []
        for i in range(NBUCKETS):
            out.extend(self.bucket(i))
        return out

    def bucket(self, index):
        """The contacts of one bucket, least recently seen first."""
        members = self._buckets[check_bucket_index(index)]
        return sorted(members, key=_by_seq) if members else []

    def replacement_cache(self, index):
        """One bucket's replacement candidates, least recently seen first."""
        members = self._cache[check_bucket_index(index)]
        return list(members) if members else []

    def bucket_sizes(self):
        """{bucket index: number of contacts} for every non-empty bucket."""
        return {i: len(b) for i, b in enumerate(self._buckets) if b}

    def bucket_of(self, node_id):
        """The bucket an id belongs in: its common-prefix length with ours (256 = ours)."""
        return yz_cpl(self._self, _ptr(node_id))

    def oldest(self, index):
        """The least recently seen contact of a bucket, or None when it is empty."""
        members = self._buckets[check_bucket_index(index)]
        return _oldest(members) if members else None

    def stale_contacts(self):
        """Contacts with failures counted since they were last seen."""
        return [c for c in self._contacts.values() if (<Contact>c).stale]

    def nearest(self, target, k=None, *, include_stale=False):
        """The ``k`` contacts closest to ``target`` by XOR distance, nearest first."""
        cdef const unsigned char* t = _ptr(target)
        cdef Py_ssize_t kk
        if k is None:
            kk = self.k
        elif not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidArgument(f"k must be an integer >= 0, got {k!r}.")
        else:
            kk = k
        cdef list found = []
        cdef list buckets = self._buckets
        cdef const unsigned char* s = self._self
        cdef int b = yz_cpl(s, t)
        cdef int i, m
        cdef int later[NBUCKETS]
        cdef int nlater = 0
        cdef bint stale_ok = include_stale
        # Buckets in order of distance from the target, whole buckets at a
        # time, until k are found (the pure twin explains the order).
        if b < NBUCKETS:
            _gather(found, buckets[b], stale_ok)
        i = b + 1
        while len(found) < kk and i < NBUCKETS:
            if buckets[i]:
                if (t[i >> 3] ^ s[i >> 3]) & (0x80 >> (i & 7)):
                    _gather(found, buckets[i], stale_ok)
                else:
                    later[nlater] = i
                    nlater += 1
            i += 1
        m = nlater - 1
        while len(found) < kk and m >= 0:
            _gather(found, buckets[later[m]], stale_ok)
            m -= 1
        i = (b if b < NBUCKETS else NBUCKETS) - 1
        while len(found) < kk and i >= 0:
            _gather(found, buckets[i], stale_ok)
            i -= 1
        cdef Py_ssize_t n = len(found), j
        cdef vector[YzDist] entries
        entries.resize(n)
        for j in range(n):
            yz_dist_set(entries[j], t, <const unsigned char*>PyBytes_AS_STRING((<Contact>found[j]).id), <uint32_t>j)
        if kk > n:
            kk = n
        yz_select_k(entries, <size_t>kk)
        return [found[entries[j].idx] for j in range(kk)]

    def due_for_refresh(self, double now, double interval):
        """Buckets not refreshed for ``interval``, up to the deepest non-empty one."""
        cdef int deepest = 0, i
        for i in range(NBUCKETS):
            if self._buckets[i]:
                deepest = i
        created = self._created
        last = self._refreshed
        return [i for i in range(deepest + 1) if last.get(i, created) + interval <= now]

    def mark_refreshed(self, index, now):
        """Record that a lookup went through bucket ``index`` at ``now``."""
        self._refreshed[check_bucket_index(index)] = now

    # -- updates -----------------------------------------------------------

    def add(self, node_id, address, double now, ip=None):
        """Offer a contact we have just heard from (see the pure twin)."""
        cdef const unsigned char* p = _ptr(node_id)
        cdef Contact c = self._contacts.get(node_id)
        if c is not None:
            if ip is None or ip == c.ip or self._regroup(c, ip):
                c.address = address
            self._touch(c, now)
            return _R_UPDATED
        cdef int b = yz_cpl(self._self, p)
        if b == NBUCKETS:
            return _R_SELF
        group = ip_group(ip) if ip is not None else None
        if group is not None and self.ip_limit and self._group_count(b, group) >= self.ip_limit:
            return _R_IP_LIMIT
        cdef list members = self._buckets[b]
        if members is None or len(members) < self.k:
            if self._cached:
                self._uncache(node_id)
            self._insert(b, node_id, address, ip, group, now)
            return _R_ADDED
        cdef Contact victim = None, m
        for m in members:
            if m.stale and (victim is None or m.fails > victim.fails
                            or (m.fails == victim.fails and m.seq < victim.seq)):
                victim = m
        if victim is not None:
            self._drop(victim)
            self._uncache(node_id)
            self._insert(b, node_id, address, ip, group, now)
            return (REPLACED, victim.id)
        self._cache_put(b, node_id, address, ip, group, now)
        return (FULL, _oldest(members).id)

    def seen(self, node_id, double now):
        """A contact answered: make it most recently seen and clear its failures."""
        cdef Contact c = self._contacts.get(node_id)
        if c is None:
            c = self._cached.get(node_id)
            if c is not None:
                self._cache_touch(c, now)
            return False
        self._touch(c, now)
        return True

    def fail(self, node_id, double now):
        """A request to the contact failed or timed out (see the pure twin)."""
        cdef Contact c = self._contacts.get(node_id)
        if c is None:
            if node_id not in self._cached:
                return _R_UNKNOWN
            self._uncache(node_id)
            return (EVICTED, None)
        c.fails += 1
        c.stale = True
        if c.fails < self.max_fails:
            return _R_STALE
        self._drop(c)
        return (EVICTED, self._promote(c.bucket))

    def remove(self, node_id):
        """Remove a contact (e.g. its connection closed for good)."""
        cdef Contact c = self._contacts.get(node_id)
        if c is None:
            if self._uncache(node_id):
                return (REMOVED, None)
            return _R_UNKNOWN
        self._drop(c)
        return (REMOVED, self._promote(c.bucket))

    def update(self, node_id, *, address=None, ip=None, meta=None):
        """Merge changed peer information into a known contact (bucket or cache)."""
        cdef Contact c = self._contacts.get(node_id)
        cdef bint in_bucket = c is not None
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

    cdef void _insert(self, int b, bytes node_id, object address, object ip, object group,
                      double now) except *:
        self._seq += 1
        self._place(_new_contact(node_id, address, ip, group, now, self._seq, b))

    cdef void _place(self, Contact c) except *:
        cdef list members = self._buckets[c.bucket]
        if members is None:
            members = []
            self._buckets[c.bucket] = members
        members.append(c)
        self._contacts[c.id] = c
        if c.group is not None:
            self._group_add(c.bucket, c.group, 1)

    cdef void _drop(self, Contact c) except *:
        _discard(self._buckets[c.bucket], c)
        del self._contacts[c.id]
        if c.group is not None:
            self._group_add(c.bucket, c.group, -1)

    cdef Py_ssize_t _group_count(self, int b, object group) except -1:
        cdef dict counts = self._groups.get(b)
        return counts.get(group, 0) if counts else 0

    cdef void _group_add(self, int b, object group, int delta) except *:
        cdef dict counts = self._groups.get(b)
        if counts is None:
            counts = {}
            self._groups[b] = counts
        n = counts.get(group, 0) + delta
        if n:
            counts[group] = n
        else:
            del counts[group]

    cdef bint _regroup(self, Contact c, object ip) except -1:
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

    cdef inline void _touch(self, Contact c, double now) noexcept:
        """A sighting: most recently seen, failures forgiven."""
        c.last_seen = now
        c.fails = 0
        c.stale = False
        self._seq += 1
        c.seq = self._seq

    cdef void _cache_put(self, int b, bytes node_id, object address, object ip, object group,
                         double now) except *:
        if not self.replacements:
            return
        cdef Contact c = self._cached.get(node_id)
        if c is not None:
            c.address = address
            c.ip = ip
            c.group = group
            self._cache_touch(c, now)
            return
        cdef list cache = self._cache[b]
        if cache is None:
            cache = []
            self._cache[b] = cache
        self._seq += 1
        c = _new_contact(node_id, address, ip, group, now, self._seq, b)
        cache.append(c)
        self._cached[node_id] = c
        if len(cache) > self.replacements:
            del self._cached[(<Contact>cache.pop(0)).id]

    cdef void _cache_touch(self, Contact c, double now) except *:
        cdef list cache = self._cache[c.bucket]
        _discard(cache, c)
        cache.append(c)
        self._touch(c, now)

    cdef bint _uncache(self, object node_id) except -1:
        cdef Contact c = self._cached.pop(node_id, None)
        if c is None:
            return False
        _discard(self._cache[c.bucket], c)
        return True

    cdef object _promote(self, int b):
        cdef list cache = self._cache[b]
        if not cache:
            return None
        cdef int limit = self.ip_limit
        cdef Py_ssize_t pos
        cdef Contact c
        for pos in range(len(cache) - 1, -1, -1):
            c = cache[pos]
            if c.group is None or not limit or self._group_count(b, c.group) < limit:
                del cache[pos]
                del self._cached[c.id]
                self._place(c)
                return c.id
        return None


cdef inline Contact _oldest(list members):
    cdef Contact oldest = members[0], m
    for m in members:
        if m.seq < oldest.seq:
            oldest = m
    return oldest


cdef inline void _discard(list members, Contact c) except *:
    # Identity scan over at most k pointers: cheaper in C than any dict, and
    # unlike list.remove() it never falls back to rich comparison.
    cdef Py_ssize_t i, n = len(members)
    for i in range(n):
        if <PyObject*>PyList_GET_ITEM(members, i) is <PyObject*>c:
            del members[i]
            return


cdef inline void _gather(list found, object members, bint stale_ok) except *:
    cdef Contact c
    if not members:
        return
    if stale_ok:
        found.extend(<list>members)
    else:
        for c in <list>members:
            if not c.stale:
                found.append(c)


def _rebuild_table(self_id, k, replacements, ip_limit, max_fails, contacts, buckets, cache,
                   cached, groups, seq, created, refreshed):
    """A pickled or copied :class:`RoutingTable` (see ``RoutingTable.__reduce__``)."""
    cdef RoutingTable t = RoutingTable(self_id, k, replacements=replacements,
                                       ip_limit=ip_limit, max_fails=max_fails, now=created)
    t._contacts, t._buckets, t._cache, t._cached = contacts, buckets, cache, cached
    t._groups, t._seq, t._refreshed = groups, seq, refreshed
    return t
