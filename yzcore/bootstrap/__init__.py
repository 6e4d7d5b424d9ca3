"""The bootstrap server role: introductions, the bridge registry and supervisor, signal relay.

Import :class:`yzcore.bootstrap.server.BootstrapServer` for the server; the
modules beside it (``directory``, ``auth``) are sans-I/O and light.
"""
