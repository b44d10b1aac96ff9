"""``python3 -s -m bai_kernel [--socket PATH]``: start the kernel runner."""

from .runner import main

raise SystemExit(main())
