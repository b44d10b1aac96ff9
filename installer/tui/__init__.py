"""The ``bai-install`` wizard (Textual). ``bai-install`` with no arguments on a terminal opens it."""
