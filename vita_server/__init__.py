"""`vita serve`: an OpenAI-compatible HTTP front end over vita_core, beside the CLI (never imported by it)."""

from vita_server.app import create_app

__all__ = ["create_app"]
