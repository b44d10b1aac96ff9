"""bai client SDK and the ``backend.ai`` CLI.

Kept import-free on purpose: the CLI entry point imports this package, and its start-up time
matters (see ``bai.client.cli.main``).
"""

#: The client package version (kept in step with ``pyproject.toml``).
__version__ = "0.1.0"


def get_user_agent() -> str:
    return f"Backend.AI Client for Python {__version__} (bai)"
