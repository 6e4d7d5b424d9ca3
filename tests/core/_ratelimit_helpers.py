"""What the rate-limiter tests share: ``FIND``, the operation most of their checks limit."""

FIND = "find_node"
