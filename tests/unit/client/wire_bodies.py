"""Request bodies the official client 24.03.11 sent, copied from the wire transcripts
(``shared/reference/wire/``). Key order matters: the client must produce the same bytes
(``json.dumps`` with default separators; the transcripts' Content-Length confirms it)."""

from __future__ import annotations

from typing import Any


def create_body(
    name: str,
    *,
    enqueue_only: bool = False,
    dependencies: Any = (),
    preopen_ports: Any = None,
    architecture: str = "x86_64",
) -> dict[str, Any]:
    return {
        "tag": None,
        "name": name,
        "config": {
            "mounts": [],
            "environ": {},
            "resources": {},
            "resource_opts": {},
            "scalingGroup": None,
            "mount_map": {},
            "mount_options": {},
            "preopen_ports": preopen_ports,
        },
        "dependencies": list(dependencies) if dependencies is not None else None,
        "callback_url": None,
        "architecture": architecture,
        "clusterSize": 1,
        "clusterMode": "single-node",
        "starts_at": None,
        "bootstrap_script": None,
        "owner_access_key": None,
        "domain": "default",
        "group": "default",
        "type": "interactive",
        "enqueueOnly": enqueue_only,
        "maxWaitSeconds": 0,
        "reuseIfExists": True,
        "startupCommand": None,
        "image": "python",
    }


#: wire/20 #22 (`backend.ai session create -t anchor-s1 python`), Content-Length 556
SESSION_CREATE_20 = create_body("anchor-s1")
SESSION_CREATE_20_LENGTH = 556
#: wire/26 #45 (`... --enqueue-only`), Content-Length 555
SESSION_CREATE_26 = create_body("anchor-s2", enqueue_only=True)
SESSION_CREATE_26_LENGTH = 555
#: wire/28 #57 (`backend.ai run --rm -c 'print(1)' python`), Content-Length 563
RUN_CREATE_28 = create_body("pysdk-fba3133648", dependencies=None, preopen_ports=[])
RUN_CREATE_28_LENGTH = 563

#: wire/27 #53 and wire/20 #28 (`backend.ai ps`), Content-Length 573
SESSION_LIST_27 = {
    "query": "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {\n  compute_session_list(\n      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {\n    items { name access_key id group_name main_kernel_id image type status status_info status_changed result }\n    total_count\n  }\n}",
    "variables": {
        "status": "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR",
        "access_key": None,
        "filter": None,
        "order": None,
        "limit": 20,
        "offset": 0,
    },
}
SESSION_LIST_27_LENGTH = 573

#: wire/22 #34, wire/28 #58: the first websocket frame
WS_FIRST_FRAME_22 = '{"code": "print(1)", "mode": "query", "options": {}}'
