"""The error an operator module raises for a bad operand, naming the node inside it.

Operator modules (``_url``, ``_subpath``, ``_netaddr``, ``_email``, ``_regex``) validate
their own operands without knowing where in a capability they sit; ``at`` is the suffix
below the operator (``.hosts[2]``) that ``_constraints`` appends to the node's path.
"""

from __future__ import annotations

__all__ = ["OperandError"]


class OperandError(ValueError):
    """A malformed operand; ``at`` locates the bad part inside it ("" = the operand)."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.at = at
