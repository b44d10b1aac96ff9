import os

# aetcd talks gRPC. gRPC's fork handlers break child processes forked later in the same test
# process (the role tests fork `docker exec`s through pyinfra): its poller then fails in the
# child with "epoll_wait error: Bad file descriptor". Turn the handlers off before grpc loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")

pytest_plugins = ["tests.fixtures.halfstack", "tests.fixtures.images"]
