"""REST API: every registered command as `POST /api/<command words>`, generated from the registry."""

from linelab.api.app import create_app

__all__ = ["create_app"]
