"""The anyio runtime: a node on real transports and a real clock."""

from yzcore.runtime.node import Node

__all__ = ["Node"]
