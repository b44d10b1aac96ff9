"""The pure rules of the vfolder services: folder names, paths inside a folder, the etcd
``volumes/`` tree, a proxy's errors as the manager's, mkdir results as the original's ResultSet."""

from __future__ import annotations

import pytest

from bai.common.storage_client import ProxyRefused, parse_volume_config
from bai.manager import errors
from bai.manager.services.vfolders import access, files, folders, proxies


@pytest.mark.parametrize("name", ["data", "my data", "é-ü_1", ".local", ".config", "a" * 64, "x.bashrc"])
def test_good_names(name: str) -> None:
    folders.check_name(name)


@pytest.mark.parametrize("name", ["", "a" * 65, "a/b", "a\\b", ".", "..", " x", "x ", "tab\t", "nl\n", "del\x7f",
                                  "zw\u200b", ".ssh", ".jupyter", ".tmux.conf", "tmp", "home", ".bashrc",
                                  ".zshrc", ".bash_profile"])
def test_bad_names(name: str) -> None:
    with pytest.raises(errors.InvalidAPIParameters):
        folders.check_name(name)


@pytest.mark.parametrize("path", [".", "a", "a/b.txt", "./a", "a/./b", "..a", "a..", "with space", "%2e%2e/x"])
def test_paths_inside(path: str) -> None:
    assert files.relpath(path) == path


@pytest.mark.parametrize("path", ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "\\x", "a\\..\\b", "a\x00",
                                  "a\nb", "x" * 5000])
def test_paths_outside_or_malformed(path: str) -> None:
    with pytest.raises(errors.InvalidAPIParameters):
        files.relpath(path)


@pytest.mark.parametrize("path", [".", "", "./", "/"])
def test_root_where_a_file_is_needed(path: str) -> None:
    with pytest.raises(errors.InvalidAPIParameters):
        files.relpath(path, allow_root=False)


def test_volume_config_from_etcd() -> None:
    config = parse_volume_config({
        "proxies/local/manager_api": "http://127.0.0.1:6022", "proxies/local/client_api": "http://127.0.0.1:6021",
        "proxies/local/secret": "s" * 16, "proxies/local/ssl_verify": "false",
        "proxies/local/sftp_scaling_groups": "a, b", "proxies/half/manager_api": "http://x",  # no secret
        "_types/user": "", "_types/group": "", "default_host": "local:volume1",
        "exposed_volume_info": "percentage,used_bytes",
    })
    assert list(config.proxies) == ["local"]
    local = config.proxies["local"]
    assert local.ssl_verify is False and local.sftp_scaling_groups == ("a", "b")
    assert config.types == ("group", "user") and config.default_host == "local:volume1"
    assert config.exposed_volume_info == ("percentage", "used_bytes")
    assert parse_volume_config({}).types == ("user",)  # the original's default


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, {"title": "VFolder not found"}, errors.VFolderOperationFailed),
    (404, {"msg": "'x' does not exist"}, errors.VFolderFileNotFound),
    (409, {}, errors.VFolderFileConflict),
    (413, {"type": "https://api.backend.ai/probs/storage/quota-exceeded"}, errors.QuotaExceeded),
    (413, {"type": "https://api.backend.ai/probs/storage/too-large"}, errors.RequestTooLarge),
    (403, {}, errors.StorageProxyFailed),
    (500, {}, errors.StorageProxyFailed),
])
def test_proxy_errors_keep_their_class(status: int, body: dict[str, str], expected: type[errors.ApiError]) -> None:
    mapped = proxies.refused(ProxyRefused(status, body.get("msg") or body.get("title") or "x", body),
                             errors.VFolderFileNotFound)
    assert type(mapped) is expected
    assert (mapped.status < 500) == (status < 500 and status != 403)


def test_mkdir_results_as_result_set() -> None:
    got = files.result_set([{"relpath": "a", "status": "success", "msg": None},
                            {"relpath": "b", "status": "failed", "msg": "exists"}])
    assert got == {"success": [{"item": "a", "msg": None}], "failed": [{"item": "b", "msg": "exists"}]}
    same = {"success": [{"item": "a", "msg": None}], "failed": []}
    assert files.result_set(same) == same


def test_permission_order() -> None:
    assert access.permits("wd", "rw") and access.permits("rw", "ro") and not access.permits("ro", "rw")
    assert not access.permits("bogus", "ro")
