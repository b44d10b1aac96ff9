"""``python -m bai.webserver start [--config PATH]`` (the same as ``bai-webserver``)."""

from .cli import main

main()
