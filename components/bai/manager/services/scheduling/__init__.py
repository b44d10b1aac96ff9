"""The scheduling policy, free of I/O: which pending session goes next (queues), whether its
owner's limits let it run now (predicates) and which agent takes it (selectors). The dispatcher
in ``services/scheduler.py`` loads one snapshot per pass, asks these modules, and writes the
decisions back under its lock."""
