"""The command line: thin commands that parse, call one library function, and format."""

from sentiment_api.cli.commands import app, main

__all__ = ["app", "main"]
