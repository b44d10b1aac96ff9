"""The manager-facing API: the shared-secret check, every endpoint's reply as the original's,
and the physical layout on the volume."""

from __future__ import annotations

import json
import os
import uuid

import jwt

from .conftest import Proxy


async def test_status_is_open_and_everything_else_needs_the_secret(proxy: Proxy) -> None:
    for path in ("/", "/status"):
        status, body = await proxy.call("GET", path, auth="")
        assert status == 200 and body["status"] == "ok" and body["type"] == "manager-facing"
    for method, path in (("GET", "/volumes"), ("POST", "/folder/create"), ("POST", "/folder/file/upload")):
        status, body = await proxy.call(method, path, {}, auth="wrong")
        assert status == 403, (path, body)
        assert body["type"].endswith("/storage/unauthorized")
        status, _ = await proxy.call(method, path, {}, auth="")
        assert status == 403


async def test_volumes_hwinfo_metric_fs_usage(proxy: Proxy) -> None:
    status, body = await proxy.call("GET", "/volumes")
    assert status == 200
    assert body == {"volumes": [{"name": "volume1", "backend": "vfs", "path": str(proxy.volume_root),
                                 "fsprefix": "", "capabilities": ["vfolder", "quota"]}]}
    status, body = await proxy.call("GET", "/volume/hwinfo", {"volume": "volume1"})
    assert status == 200 and body["status"] == "healthy"
    status, body = await proxy.call("GET", "/volume/performance-metric", {"volume": "volume1"})
    assert status == 200 and set(body["metric"]) >= {"iops_read", "io_bytes_write"}
    status, body = await proxy.call("GET", "/folder/fs-usage", {"volume": "volume1"})
    assert status == 200 and body["capacity_bytes"] >= body["used_bytes"] > 0
    status, body = await proxy.call("GET", "/volumes/x", None)
    assert status == 404 and body["type"].endswith("http-error")
    status, body = await proxy.call("GET", "/folder/fs-usage", {"volume": "nope"})
    assert status == 404 and "nope" in body["msg"]


async def test_folder_layout_usage_clone_delete(proxy: Proxy) -> None:
    scope = uuid.uuid4()
    vfid = await proxy.new_folder("user", scope)
    path = proxy.folder_path(vfid)
    hexid = vfid.rsplit("/", 1)[1]
    assert path == proxy.volume_root / scope.hex / hexid[:2] / hexid[2:4] / hexid[4:]
    assert path.is_dir()
    status, body = await proxy.call("POST", "/folder/create", {"volume": "volume1", "vfid": vfid})
    assert status == 409

    (path / "a.txt").write_bytes(b"x" * 100)
    (path / "d").mkdir()
    (path / "d" / "b.txt").write_bytes(b"y" * 23)
    status, body = await proxy.call("GET", "/folder/usage", {"volume": "volume1", "vfid": vfid})
    assert (status, body) == (200, {"file_count": 2, "used_bytes": 123})
    status, body = await proxy.call("GET", "/folder/used-bytes", {"volume": "volume1", "vfid": vfid})
    assert (status, body) == (200, {"used_bytes": 123})

    status, body = await proxy.call("GET", "/folder/mount", {"volume": "volume1", "vfid": vfid})
    assert (status, body) == (200, {"path": str(path)})
    status, body = await proxy.call("GET", "/folder/mount", {"volume": "volume1", "vfid": vfid, "subpath": "d"})
    assert (status, body) == (200, {"path": str(path / "d")})
    for bad in ("../..", "missing", "a.txt", "/etc"):
        status, body = await proxy.call("GET", "/folder/mount", {"volume": "volume1", "vfid": vfid, "subpath": bad})
        assert status == 400 and body["msg"] == "Invalid vfolder subpath", bad
    other = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
    status, body = await proxy.call("GET", "/folder/mount", {"volume": "volume1", "vfid": other})
    assert status == 400 and body["msg"] == "VFolder not found"

    clone = f"project:{uuid.uuid4()}/{uuid.uuid4().hex}"
    status, _ = await proxy.call("POST", "/folder/clone", {"src_volume": "volume1", "src_vfid": vfid,
                                                           "dst_volume": "volume1", "dst_vfid": clone})
    assert status == 204
    assert (proxy.folder_path(clone) / "d" / "b.txt").read_bytes() == b"y" * 23

    status, _ = await proxy.call("POST", "/folder/delete", {"volume": "volume1", "vfid": vfid})
    assert status == 204
    assert not path.exists() and not path.parent.exists()
    assert (proxy.volume_root / scope.hex).is_dir()  # the scope stays
    status, _ = await proxy.call("POST", "/folder/delete", {"volume": "volume1", "vfid": vfid})
    assert status == 204  # idempotent
    for bad in ("user:nope/abc", "x" * 200, "group:" + str(uuid.uuid4()) + "/" + uuid.uuid4().hex):
        status, body = await proxy.call("POST", "/folder/create", {"volume": "volume1", "vfid": bad})
        assert status == 400, bad


async def test_quota_scopes(proxy: Proxy) -> None:
    qsid = f"project:{uuid.uuid4()}"
    base = {"volume": "volume1", "qsid": qsid}
    status, body = await proxy.call("GET", "/quota-scope", base)
    assert (status, body) == (200, {"used_bytes": None, "limit_bytes": None})
    status, _ = await proxy.call("POST", "/quota-scope", {**base, "options": {"limit_bytes": 1000}})
    assert status == 204
    status, _ = await proxy.call("POST", "/quota-scope", {**base, "options": {"limit_bytes": 1000}})
    assert status == 409
    status, body = await proxy.call("GET", "/quota-scope", base)
    assert (status, body) == (200, {"used_bytes": 0, "limit_bytes": 1000})
    status, _ = await proxy.call("PATCH", "/quota-scope", {**base, "options": {"limit_bytes": 5000}})
    assert status == 204
    status, body = await proxy.call("GET", "/quota-scope", base)
    assert body == {"used_bytes": 0, "limit_bytes": 5000}
    status, _ = await proxy.call("DELETE", "/quota-scope/quota", base)
    assert status == 204
    status, body = await proxy.call("GET", "/quota-scope", base)
    assert body == {"used_bytes": 0, "limit_bytes": None}
    status, body = await proxy.call("PATCH", "/quota-scope", {**base, "options": {"limit_bytes": -5}})
    assert status == 400

    # a folder's creation sets the limit of a new scope
    scope = uuid.uuid4()
    vfid = await proxy.new_folder("user", scope, {"initial_max_size_for_quota_scope": 4096})
    (proxy.folder_path(vfid) / "f").write_bytes(b"z" * 10)
    status, body = await proxy.call("GET", "/quota-scope", {"volume": "volume1", "qsid": f"user:{scope}"})
    assert body == {"used_bytes": 10, "limit_bytes": 4096}


async def test_file_operations(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    root = proxy.folder_path(vfid)
    base = {"volume": "volume1", "vfid": vfid}
    status, body = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "a/b/c"})
    assert status == 201 and body["results"][0]["status"] == "success"
    assert (root / "a" / "b" / "c").is_dir()
    status, body = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "a/b/c"})
    assert status == 409
    status, body = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "a/b/c", "exist_ok": True})
    assert status == 201
    status, body = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "x/y", "parents": False})
    assert status == 404
    status, body = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": ["m1", "a/b/c", "m2"]})
    assert status == 207 and [r["status"] for r in body["results"]] == ["success", "failed", "success"]

    (root / "a" / "f.txt").write_bytes(b"hello")
    (root / "link").symlink_to("a/f.txt")
    status, body = await proxy.call("POST", "/folder/file/list", {**base, "relpath": "."})
    assert status == 200
    items = {i["name"]: i for i in body["items"]}
    assert set(items) == {"a", "m1", "m2", "link"}
    assert items["a"]["type"] == "DIRECTORY" and items["link"]["type"] == "SYMLINK"
    assert items["link"]["symlink_target"] == "a/f.txt"
    status, body = await proxy.call("POST", "/folder/file/list", {**base, "relpath": "a"})
    f = next(i for i in body["items"] if i["name"] == "f.txt")
    assert f["type"] == "FILE" and f["stat"]["size"] == 5 and f["symlink_target"] is None
    assert f["stat"]["modified"].endswith("+00:00") and isinstance(f["stat"]["mode"], int)

    status, _ = await proxy.call("POST", "/folder/file/rename", {**base, "relpath": "a/f.txt", "new_name": "g.txt"})
    assert status == 204 and (root / "a" / "g.txt").read_bytes() == b"hello"
    status, _ = await proxy.call("POST", "/folder/file/rename", {**base, "relpath": "a/g.txt", "new_name": "b"})
    assert status == 409  # a directory of that name exists
    status, _ = await proxy.call("POST", "/folder/file/move", {**base, "src_relpath": "a/g.txt", "dst_relpath": "m1"})
    assert status == 204 and (root / "m1" / "g.txt").is_file()  # into a directory, as mv
    status, _ = await proxy.call("POST", "/folder/file/move", {**base, "src_relpath": "m1/g.txt", "dst_relpath": "h.txt"})
    assert status == 204 and (root / "h.txt").is_file()
    status, _ = await proxy.call("POST", "/folder/file/move", {**base, "src_relpath": "a", "dst_relpath": "a/b/c/a"})
    assert status == 400

    async with proxy.http.post(proxy.manager_url + "/folder/file/fetch", json={**base, "relpath": "h.txt"},
                               headers={"X-BackendAI-Storage-Auth-Token": proxy.config.api.manager.secret}) as resp:
        assert resp.status == 200 and await resp.read() == b"hello"

    status, body = await proxy.call("POST", "/folder/file/delete", {**base, "relpaths": ["a"]})
    assert status == 400 and "recursive" in body["msg"]
    status, body = await proxy.call("POST", "/folder/file/delete", {**base, "relpaths": ["h.txt", "missing"]})
    assert status == 404 and (root / "h.txt").exists()  # all or nothing
    status, body = await proxy.call("POST", "/folder/file/delete", {**base, "relpaths": ["a", "h.txt", "link"],
                                                                    "recursive": True})
    assert (status, body) == (200, {"status": "ok"})
    assert sorted(p.name for p in root.iterdir()) == ["m1", "m2"]

    status, body = await proxy.call("POST", "/folder/metadata", {**base, "payload": {"k": [1, 2]}})
    assert status == 204
    status, body = await proxy.call("GET", "/folder/metadata", base)
    assert (status, body) == (200, {"k": [1, 2]})


async def test_tokens_carry_the_original_claims(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    secret = proxy.config.storage_proxy.secret
    token = await proxy.download_token(vfid, "dir/file.bin", archive=True)
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims.keys() == {"op", "volume", "vfid", "relpath", "archive", "unmanaged_path", "exp"}
    assert (claims["op"], claims["volume"], claims["vfid"], claims["relpath"], claims["archive"]) == \
        ("download", "volume1", vfid, "dir/file.bin", True)
    token = await proxy.upload_token(vfid, "up/file.bin", 1234)
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims.keys() == {"op", "volume", "vfid", "relpath", "session", "size", "exp"}
    assert (claims["op"], claims["relpath"], claims["size"]) == ("upload", "up/file.bin", 1234)
    assert (proxy.folder_path(vfid) / ".upload" / claims["session"]).is_file()
    # bodies that are not JSON objects, wrong types, missing keys: 400 with the reason
    status, body = await proxy.call("POST", "/folder/file/upload", {"volume": "volume1", "vfid": vfid, "relpath": "x"})
    assert status == 400 and "size" in body["msg"]
    async with proxy.http.post(proxy.manager_url + "/folder/file/list", data=b"[1,",
                               headers={"X-BackendAI-Storage-Auth-Token": proxy.config.api.manager.secret}) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
        assert "JSON" in json.loads(await resp.read())["msg"]


async def test_folders_and_what_the_proxy_writes_belong_to_the_kernel_uid(proxy: Proxy) -> None:
    """Sessions run as kernel-uid/kernel-gid (1000 by default): they must be able to write into
    the folders they mount and into what uploads and mkdir made there."""
    assert os.geteuid() == 0, "the component tests run as root, as the installed proxy"
    owner = (proxy.config.storage_proxy.kernel_uid, proxy.config.storage_proxy.kernel_gid)
    assert owner == (1000, 1000)
    vfid = await proxy.new_folder()
    root = proxy.folder_path(vfid)
    base = {"volume": "volume1", "vfid": vfid}
    assert await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "m/n"}) == \
        (201, {"results": [{"relpath": "m/n", "status": "success", "msg": None}]})
    await proxy.upload(vfid, "up/deep/file.bin", b"data")
    clone = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
    status, _ = await proxy.call("POST", "/folder/clone", {"src_volume": "volume1", "src_vfid": vfid,
                                                           "dst_volume": "volume1", "dst_vfid": clone})
    assert status == 204
    for path in (root, root / "m", root / "m" / "n", root / "up", root / "up" / "deep",
                 root / "up" / "deep" / "file.bin", proxy.folder_path(clone) / "up" / "deep" / "file.bin",
                 proxy.folder_path(clone)):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == owner, path
    assert (root / ".upload").lstat().st_uid == 0  # the proxy's own bookkeeping stays its own
    assert not (proxy.folder_path(clone) / ".upload").exists()
