"""The sans-I/O protocol core: handshake, RPCs, lookups, storage, maintenance.

Nothing in this package touches a socket, a clock or a global random source:
events go in (with ``now``), actions come out. The anyio runtime and the
simulator drive the same code.
"""
