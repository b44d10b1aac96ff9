"""bai kernel runner: runs user code inside kernel containers (stdlib only; see ``runner``)."""
