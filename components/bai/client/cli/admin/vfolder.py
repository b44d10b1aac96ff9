"""``backend.ai admin vfolder ...``: the official client 24.03's folder administration commands
(superadmin: every folder, volume hosts and their performance, host mounts, shared-folder
permissions, ownership changes). Console output follows the official client; with the global
``--output json`` each command prints the manager's answer as one JSON document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from ..common import get_cli_context, print_json
from .base import Paging, binary_size, call, fetch_list, paging_options, plain, print_list

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin vfolder list`` columns (its ``_default_list_fields``)
LIST_FIELDS = [plain("host"), plain("name"), plain("status"), plain("created_at"), plain("creator"),
               plain("group", "Group ID", "group_id"), plain("permission"), plain("ownership_type")]
_PERMISSION = click.Choice(["ro", "rw", "wd"])


def _json_mode() -> bool:
    return get_cli_context().json_mode


def _request(action: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
             body: Any = None) -> Any:
    """One REST call; a failure ends the command with ``<action> failed: <reason>``."""
    async def _go(api: APISession) -> Any:
        if body is None:
            return await api.request_json(method, path, params=dict(params or {}) or None)
        return await api.request_json(method, path, json_body=body, params=dict(params or {}) or None)

    return call(_go, action=action)


def _print_nodes(resp: Mapping[str, Any]) -> None:
    """The official layout of a mounts answer: the manager's entries, then each agent's."""
    click.echo("manager")
    for key, value in (resp.get("manager") or {}).items():
        click.echo(f"  {key} : {value}")
    click.echo("\nagents")
    for agent_id, data in (resp.get("agents") or {}).items():
        click.echo(f"  {agent_id}")
        for key, value in (data or {}).items():
            click.echo(f"    {key} : {value}")


def _print_shared(entry: Mapping[str, Any]) -> None:
    click.echo(f'Virtual folder "{entry.get("vfolder_name")}" (ID: {entry.get("vfolder_id")})')
    click.echo(f"- Owner: {entry.get('owner')}")
    click.echo(f"- Status: {entry.get('status')}")
    click.echo(f"- Permission: {entry.get('perm')}")
    click.echo(f"- Folder Type: {entry.get('type')}")
    shared_to = entry.get("shared_to") or {}
    if shared_to:
        click.echo("- Shared to:")
        for key, value in shared_to.items():
            click.echo(f"\t- {key}: {value}\n")


def make_group(name: str = "vfolder", help_text: str | None = None) -> click.Group:  # noqa: C901
    @click.group(name=name, help=help_text)
    def vfolder() -> None:
        """VFolder administration commands."""

    @vfolder.command(name="list")
    @click.option("-g", "--group", default=None, help="Filter by group (project) ID.")
    @paging_options
    def list_(group: str | None, filter_: str | None, order: str | None, offset: int, limit: int | None) -> None:
        """List virtual folders (every folder for superadmins; a domain admin's domain)."""
        paging = Paging(offset, limit, filter_, order, extra={"group_id": (group, "UUID")})
        items, total = call(lambda api: fetch_list(api, "vfolder_list", LIST_FIELDS, paging),
                            action="vfolder list")
        print_list(items, LIST_FIELDS, total)

    @vfolder.command()
    def list_hosts() -> None:
        """List all mounted hosts from virtual folder root (superadmin privilege required)."""
        resp = _request("vfolder list-hosts", "GET", "/folders/_/all_hosts")
        if _json_mode():
            print_json(resp)
            return
        click.echo(f"Default vfolder host: {resp.get('default')}")
        click.echo(f"Mounted hosts: {', '.join(resp.get('allowed') or [])}")

    @vfolder.command()
    @click.argument("vfolder_host")
    def perf_metric(vfolder_host: str) -> None:
        """Show the performance statistics of a vfolder host (superadmin privilege required).

        VFOLDER_HOST is the storage proxy name and the volume name separated by a colon
        (e.g. "local:volume1")."""
        resp = _request("vfolder perf-metric", "GET", "/folders/_/perf-metric",
                        params={"folder_host": vfolder_host})
        if _json_mode():
            print_json(resp)
            return
        from .base import table

        rows = [[k, binary_size(v) if "bytes" in k else f"{float(v):.2f}"]
                for k, v in (resp.get("metric") or {}).items()]
        click.echo(table(["Key", "Value"], rows))

    @vfolder.command()
    @click.option("-a", "--agent-id", default=None, help="Target agent to fetch fstab contents.")
    def get_fstab_contents(agent_id: str | None) -> None:
        """Get contents of fstab file from a node (superadmin privilege required).

        Without --agent-id the manager's fstab is shown."""
        resp = _request("vfolder get-fstab-contents", "GET", "/folders/_/fstab",
                        params={"agent_id": agent_id} if agent_id else None)
        if _json_mode():
            print_json(resp)
        else:
            click.echo(resp)

    @vfolder.command()
    def list_mounts() -> None:
        """List all mounted hosts in virtual folder root (superadmin privilege required)."""
        resp = _request("vfolder list-mounts", "GET", "/folders/_/mounts")
        print_json(resp) if _json_mode() else _print_nodes(resp)

    @vfolder.command()
    @click.argument("fs_location", metavar="FS-LOCATION")
    @click.argument("name")
    @click.option("-o", "--options", default=None, help="Mount options.")
    @click.option("--edit-fstab", is_flag=True, help="Edit fstab file to mount permanently.")
    def mount_host(fs_location: str, name: str, options: str | None, edit_fstab: bool) -> None:
        """Mount a host in virtual folder root (superadmin privilege required).

        FS-LOCATION is the file system to mount; NAME the name of the mounted host."""
        resp = _request("vfolder mount-host", "POST", "/folders/_/mounts", body={
            "name": name, "fs_location": fs_location, "options": options, "edit_fstab": edit_fstab})
        print_json(resp) if _json_mode() else _print_nodes(resp)

    @vfolder.command()
    @click.argument("name")
    @click.option("--edit-fstab", is_flag=True, help="Edit fstab file to mount permanently.")
    def umount_host(name: str, edit_fstab: bool) -> None:
        """Unmount a host from virtual folder root (superadmin privilege required)."""
        resp = _request("vfolder umount-host", "DELETE", "/folders/_/mounts",
                        body={"name": name, "edit_fstab": edit_fstab})
        print_json(resp) if _json_mode() else _print_nodes(resp)

    @vfolder.command()
    def list_shared_vfolders() -> None:
        """List all shared vfolders (superadmin privilege required)."""
        resp = _request("vfolder list-shared-vfolders", "GET", "/folders/_/shared")
        if _json_mode():
            print_json(resp)
            return
        for entry in resp.get("shared") or []:
            _print_shared(entry)

    @vfolder.command()
    @click.argument("vfolder_id")
    def shared_vfolder_info(vfolder_id: str) -> None:
        """Show the permission information of the given shared virtual folder (by ID)."""
        resp = _request("vfolder shared-vfolder-info", "GET", "/folders/_/shared",
                        params={"vfolder_id": vfolder_id})
        if _json_mode():
            print_json(resp)
            return
        shared = resp.get("shared") or []
        if shared:
            _print_shared(shared[0])

    @vfolder.command()
    @click.argument("vfolder_id")
    @click.argument("user_id")
    @click.option("-p", "--permission", type=_PERMISSION, required=True,
                  help='"ro" (read-only), "rw" (read-write) or "wd" (write-delete).')
    def update_shared_vf_permission(vfolder_id: str, user_id: str, permission: str) -> None:
        """Update a user's permission on a shared vfolder (VFOLDER_ID, USER_ID: UUIDs)."""
        resp = _request("vfolder update-shared-vf-permission", "POST", "/folders/_/shared",
                        body={"vfolder": vfolder_id, "user": user_id, "perm": permission})
        print_json(resp) if _json_mode() else click.echo(f"Updated.\n{resp}")

    @vfolder.command()
    @click.argument("vfolder_id")
    @click.argument("user_id")
    def remove_shared_vf_permission(vfolder_id: str, user_id: str) -> None:
        """Remove a user's permission on a shared vfolder (VFOLDER_ID, USER_ID: UUIDs)."""
        resp = _request("vfolder remove-shared-vf-permission", "POST", "/folders/_/shared",
                        body={"vfolder": vfolder_id, "user": user_id, "perm": None})
        print_json(resp) if _json_mode() else click.echo(f"Removed.\n{resp}")

    @vfolder.command()
    @click.argument("vfolder_id")
    @click.argument("user_email")
    def change_vfolder_ownership(vfolder_id: str, user_email: str) -> None:
        """Give the ownership of a virtual folder (by ID) to the user with USER_EMAIL."""
        resp = _request("vfolder change-vfolder-ownership", "POST", "/folders/_/change-ownership",
                        body={"vfolder": vfolder_id, "user_email": user_email})
        if _json_mode():
            print_json(resp if resp is not None else {"ok": True})
        else:
            click.echo(f"Now ownership of VFolder:{vfolder_id} goes to User:{user_email}")

    return vfolder
