"""Entry point Pulumi runs (``main: stack/`` in Pulumi.yaml): Pulumi runs this file as a script,
so the checkout's root goes on ``sys.path`` for ``import stack``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.program import main  # noqa: E402

main()
