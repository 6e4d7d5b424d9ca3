"""yzcore's built-in transports, installed as ``yzcore_transports``.

Each registers under the ``yzcore.transports`` entry-point group, exactly as a
third-party plugin would.
"""
