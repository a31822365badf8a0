"""Errors the twin raises for a user's mistake (bad scenario file, unknown action, bad parameter).

They are `ValueError`s, so plain Python callers can catch the usual type, and `UserError`s, so
the CLI and REST layers print them without a traceback.
"""

from __future__ import annotations

from linelab.errors import UserError


class TwinError(UserError, ValueError):
    """A request the twin cannot honour."""


class ScenarioError(TwinError):
    """A scenario file that does not parse or validate; the message names the field."""


class ActionError(TwinError):
    """An action the control interface does not know, or arguments outside what it accepts."""
