"""Session templates (the original's ``/template/session`` and ``/template/cluster``) and
creating a session from one.

A template is a YAML or JSON document (kind ``taskTemplate`` or ``clusterTemplate``) a user
stores for themselves or for one of their projects. Who may do what:

- read (get, list, create a session from it): its owner, the members of its project, the admins
  of its domain, superadmins;
- change or delete: its owner, the admins of its domain, superadmins.

A template the caller may not read answers 404, as if it did not exist; one they may read but
not change answers 403.

Payloads are bounded before anything is parsed or stored (size, number of templates, values
after YAML aliases are expanded, nesting) and only JSON values are kept, so whatever a client
sends either becomes rows exactly as validated or a 400 naming the field, with nothing written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import shlex
import uuid
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bai.common.bootstrap_script import script_text
from bai.manager import errors
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import session_templates as store
from bai.manager.store import users as user_store
from bai.manager.store.keypairs import Requester

from .context import ManagerContext
from .schemas import CreateSession, CreationConfig, Scalar, field_problems, nul_at, parse
from .sessions.lookup import resolve_owner

__all__ = [
    "CLUSTER", "MAX_PAYLOAD_CHARS", "MAX_TEMPLATES", "TASK", "CreateCluster", "CreateFromTemplate", "TemplateCreate",
    "TemplateGetQuery", "TemplateListQuery", "TemplateRefQuery", "create", "delete", "get", "git_clone_snippet",
    "cluster_request", "list_templates", "merged_config", "script_text", "session_request", "to_yaml", "update",
]

Kind = Literal["TASK", "CLUSTER"]
TASK: Kind = "TASK"
CLUSTER: Kind = "CLUSTER"
#: A payload longer than this (characters) is refused before it is parsed.
MAX_PAYLOAD_CHARS = 64 * 1024
#: At most this many templates in one payload.
MAX_TEMPLATES = 100
#: Values in one payload once YAML aliases are expanded (a "billion laughs" stops here) ...
MAX_VALUES = 20_000
#: ... and how deep they may nest.
MAX_DEPTH = 32
#: A git ref or a commit: no option-looking or shell-special values.
_GIT_REF = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./+-]{0,254}$")


# ------------------------------------------------------------------ request bodies and queries

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TemplateCreate(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "payload": "api_version: '6'\nkind: taskTemplate\nmetadata: {name: my-task}\n"
                   "spec: {kernel: {image: python}}\n",
        "group_name": "default", "domain_name": "default"}]})
    payload: StrictStr = Field(max_length=MAX_PAYLOAD_CHARS,
                               description="One template document or a list of them, as JSON or YAML text.")
    group: StrictStr | None = Field(None, validation_alias=AliasChoices("group", "groupName", "group_name"),
                                    description="The project the templates belong to (name or id).")
    domain: StrictStr | None = Field(None, validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    owner_access_key: StrictStr | None = Field(None, description="Store them for another keypair (admins).")


class TemplateListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    list_all: bool = Field(False, validation_alias=AliasChoices("all", "list_all"),
                           description="Every template (superadmins), or every one of the domain (admins).")
    group_id: uuid.UUID | None = Field(None, description="Only this project's templates.")


class TemplateGetQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    body_format: Literal["yaml", "json"] = Field("yaml", validation_alias=AliasChoices("format", "body_format"))
    owner_access_key: str | None = None


class TemplateRefQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    owner_access_key: str | None = None


class CreateFromTemplate(_Strict):
    """``POST /session/_/create-from-template``: ``CreateSession``'s fields, all optional (given
    ones override the template's), and ``template_id``."""

    template_id: uuid.UUID | None = Field(None, validation_alias=AliasChoices("template_id", "templateId"))
    name: StrictStr | None = Field(None, validation_alias=AliasChoices("name", "session_name", "clientSessionToken"))
    image: StrictStr | None = Field(None, validation_alias=AliasChoices("image", "lang"))
    architecture: StrictStr | None = Field(None, validation_alias=AliasChoices("architecture", "arch"))
    type: Literal["interactive", "batch", "inference"] | None = Field(
        None, validation_alias=AliasChoices("type", "sessionType"))
    group: StrictStr | None = Field(None, validation_alias=AliasChoices("group", "groupName", "group_name"))
    domain: StrictStr | None = Field(None, validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    cluster_size: StrictInt | None = Field(None, ge=1, validation_alias=AliasChoices("cluster_size", "clusterSize"))
    cluster_mode: Literal["single-node", "multi-node"] | None = Field(
        None, validation_alias=AliasChoices("cluster_mode", "clusterMode"))
    config: CreationConfig | None = None
    tag: StrictStr | None = None
    enqueue_only: StrictBool | None = Field(None, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    max_wait_seconds: StrictInt | None = Field(
        None, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"))
    starts_at: StrictStr | None = Field(None, validation_alias=AliasChoices("starts_at", "startsAt"))
    reuse_if_exists: StrictBool | None = Field(None, validation_alias=AliasChoices("reuseIfExists", "reuse_if_exists"))
    startup_command: StrictStr | None = Field(
        None, validation_alias=AliasChoices("startupCommand", "startup_command"))
    bootstrap_script: StrictStr | None = Field(
        None, validation_alias=AliasChoices("bootstrap_script", "bootstrapScript"))
    dependencies: list[StrictStr] | None = None
    callback_url: StrictStr | None = Field(
        None, validation_alias=AliasChoices("callback_url", "callbackUrl", "callbackURL"))
    owner_access_key: StrictStr | None = None


class CreateCluster(_Strict):
    """``POST /session/_/create-cluster``: a session from a cluster template."""

    name: StrictStr = Field(validation_alias=AliasChoices("clientSessionToken", "name", "session_name"))
    template_id: uuid.UUID = Field(validation_alias=AliasChoices("template_id", "templateId"))
    type: Literal["interactive", "batch", "inference"] = Field(
        "interactive", validation_alias=AliasChoices("type", "sessionType"))
    group: StrictStr = Field("default", validation_alias=AliasChoices("group", "groupName", "group_name"))
    domain: StrictStr = Field("default", validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    scaling_group: StrictStr | None = Field(None, validation_alias=AliasChoices("scaling_group", "scalingGroup"))
    tag: StrictStr | None = None
    enqueue_only: StrictBool = Field(False, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    max_wait_seconds: StrictInt = Field(0, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"))
    owner_access_key: StrictStr | None = None


# ------------------------------------------------------------------ template documents

class _Open(BaseModel):
    """A part of a document that may carry keys of its own (kept as they are), as the original allows."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _api_version(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Metadata(_Open):
    name: StrictStr = Field(min_length=1, max_length=128)
    tag: StrictStr | None = None


class RunSpec(_Strict):
    bootstrap: StrictStr | None = Field(
        None, description="A shell script run when the session starts (its text, or base64 of it).")
    startup_command: StrictStr | None = Field(
        None, validation_alias=AliasChoices("startup_command", "startup", "startupCommand"))


class GitCredential(_Strict):
    username: StrictStr = Field(min_length=1, max_length=256)
    password: StrictStr = Field(max_length=1024)


class GitSpec(_Strict):
    repository: StrictStr = Field(min_length=1, max_length=2048)
    commit: StrictStr | None = None
    branch: StrictStr | None = None
    credential: GitCredential | None = None
    destination_dir: StrictStr | None = Field(
        None, max_length=1024, validation_alias=AliasChoices("destination_dir", "destinationDir", "dest_dir"))

    @field_validator("commit", "branch")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not _GIT_REF.match(v):
            raise ValueError("must be a git ref or commit (letters, digits, '._/+-'; not starting with '-')")
        return v

    @field_validator("repository", "destination_dir")
    @classmethod
    def _no_option(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("-") or any(c in v for c in "\n\r")):
            raise ValueError("must not start with '-' or hold line breaks")
        return v

    @model_validator(mode="after")
    def _credential_needs_http(self) -> GitSpec:
        if self.credential is not None and urlsplit(self.repository).scheme not in ("http", "https"):
            raise ValueError("a credential needs an http(s) repository URL")
        return self


class KernelSpec(_Strict):
    image: StrictStr = Field(min_length=1, max_length=512)
    architecture: StrictStr = "x86_64"
    environ: dict[str, StrictStr] | None = None
    run: RunSpec | None = None
    git: GitSpec | None = None


class TaskSpec(_Open):
    session_type: Literal["interactive", "batch", "inference"] = Field(
        "interactive", validation_alias=AliasChoices("session_type", "type", "sessionType"))
    kernel: KernelSpec
    scaling_group: StrictStr | None = None
    mounts: dict[str, StrictStr | None] | None = Field(
        None, description="vfolder name -> mount path ('' or null: under /home/work by its name).")
    resources: dict[str, Scalar] | None = None
    agent_list: list[StrictStr] | None = None


class TaskTemplate(_Open):
    api_version: StrictStr = Field(validation_alias=AliasChoices("api_version", "apiVersion"))
    kind: Literal["taskTemplate", "task_template"]
    metadata: Metadata
    spec: TaskSpec

    _version = field_validator("api_version", mode="before")(_api_version)


class ClusterNode(_Strict):
    role: StrictStr = Field(min_length=1, max_length=16)
    session_template: uuid.UUID = Field(validation_alias=AliasChoices("session_template", "sessionTemplate"))
    replicas: StrictInt = Field(1, ge=1, le=64)


class ClusterSpec(_Open):
    environ: dict[str, StrictStr] | None = None
    mounts: dict[str, StrictStr | None] | None = None
    nodes: list[ClusterNode] = Field(min_length=1, max_length=16)


class ClusterTemplate(_Open):
    api_version: StrictStr = Field(validation_alias=AliasChoices("api_version", "apiVersion"))
    kind: Literal["clusterTemplate", "cluster_template"]
    mode: Literal["single-node", "multi-node"]
    metadata: Metadata
    spec: ClusterSpec

    _version = field_validator("api_version", mode="before")(_api_version)


_DOCUMENT: dict[str, type[TaskTemplate] | type[ClusterTemplate]] = {TASK: TaskTemplate, CLUSTER: ClusterTemplate}


class _Entry(BaseModel):
    """One template of a payload: the document, and the list form's optional per-item name and
    project (``{"template": {...}, "name": ..., "group_id": ...}``, as the web UI sends)."""

    document: dict[str, Any]
    name: str | None = None
    group_id: uuid.UUID | None = None
    user_uuid: str | None = None


# ------------------------------------------------------------------ parsing payloads

def _invalid(msg: str, field: str, why: str) -> errors.InvalidAPIParameters:
    return errors.InvalidAPIParameters(msg, {field: why})


def _load(payload: str) -> Any:
    """The payload as JSON, else as YAML (safe loader: plain data only)."""
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise _invalid("The payload is too large", "payload", f"at most {MAX_PAYLOAD_CHARS} characters")
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        pass
    try:
        return yaml.safe_load(payload)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise _invalid("Malformed payload", "payload", f"neither JSON nor YAML: {exc.problem}{where}") from None
    except (yaml.YAMLError, RecursionError, ValueError):
        raise _invalid("Malformed payload", "payload", "neither JSON nor YAML") from None


def _check_plain(value: Any) -> None:
    """``value`` holds JSON values only (string keys, finite numbers), at most MAX_VALUES of them
    counting every use of a YAML alias, nested at most MAX_DEPTH deep."""
    budget = MAX_VALUES
    stack: list[tuple[Any, str, int]] = [(value, "payload", 0)]
    while stack:
        item, path, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise _invalid("The payload is too large", "payload", f"more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise _invalid("The payload nests too deep", path, f"more than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise _invalid("Invalid template", f"{path}.{key}", "keys must be strings")
                stack.append((sub, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}[{idx}]", depth + 1) for idx, sub in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise _invalid("Invalid template", path, "numbers must be finite")
        elif not (item is None or isinstance(item, str | int | float)):
            raise _invalid("Invalid template", path, f"a {type(item).__name__} is not a JSON value")


def _entries(payload: str) -> list[_Entry]:
    """The templates of a payload (one document, or a list of documents or list-form items)."""
    loaded = _load(payload)
    _check_plain(loaded)
    where = nul_at(loaded)
    if where is not None:
        raise _invalid("Invalid template", f"payload.{where}", "must not contain NUL characters")
    single = not isinstance(loaded, list)
    items = [loaded] if single else loaded
    if not items:
        raise _invalid("Invalid template", "payload", "the list holds no template")
    if len(items) > MAX_TEMPLATES:
        raise _invalid("Too many templates", "payload", f"at most {MAX_TEMPLATES} in one payload")
    entries: list[_Entry] = []
    for idx, item in enumerate(items):
        at = "payload" if single else f"payload[{idx}]"
        if not isinstance(item, dict):
            raise _invalid("Invalid template", at, "must be a template document (a mapping)")
        if "template" in item and "kind" not in item:  # the list form
            extra = set(item) - {"template", "name", "group_id", "user_uuid"}
            if extra:
                raise _invalid("Invalid template", f"{at}.{sorted(extra)[0]}", "is not allowed key")
            doc, name, group = item["template"], item.get("name"), item.get("group_id")
            if not isinstance(doc, dict):
                raise _invalid("Invalid template", f"{at}.template", "must be a template document (a mapping)")
            if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 128):
                raise _invalid("Invalid template", f"{at}.name", "must be a string of 1-128 characters")
            try:
                group_id = uuid.UUID(group) if group is not None else None
            except (TypeError, ValueError, AttributeError):
                raise _invalid("Invalid template", f"{at}.group_id", "must be a project id") from None
            user = item.get("user_uuid")
            entries.append(_Entry(document=doc, name=name, group_id=group_id,
                                  user_uuid=None if user is None else str(user)))
        else:
            entries.append(_Entry(document=item))
    return entries


async def _entries_off_loop(payload: str) -> list[_Entry]:
    """:func:`_entries` in a worker thread: parsing a hostile 64 KiB YAML payload takes up to about
    half a second of pure-Python work, which must not stall the manager's event loop."""
    return await asyncio.to_thread(_entries, payload)


def _validated(kind: Kind, document: dict[str, Any], at: str) -> dict[str, Any]:
    """The document validated as a template of ``kind``, normalised (canonical key names,
    defaults filled in, unset optional parts left out); 400 naming the first bad fields."""
    model = _DOCUMENT[kind]
    try:
        parsed = model.model_validate(document)
    except ValidationError as exc:
        raise errors.InvalidAPIParameters("Invalid template", field_problems(exc, at)) from None
    result: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True)
    return result


# ------------------------------------------------------------------ who may do what

async def _readable(conn: Any, who: Requester, row: Any) -> bool:
    if who.is_superadmin or row.user_uuid == who.user_uuid:
        return True
    if row.domain_name != who.domain_name:
        return False
    if who.role == "admin":
        return True
    return row.group_id is not None and await user_store.is_group_member(conn, who.user_uuid, row.group_id)


def _editable(who: Requester, row: Any) -> bool:
    return (who.is_superadmin or row.user_uuid == who.user_uuid
            or (who.role == "admin" and row.domain_name == who.domain_name))


def _template_id(raw: str | uuid.UUID) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.TaskTemplateNotFound(f"Template {raw[:64]!r} does not exist.") from None


async def _row_for(conn: Any, who: Requester, kind: Kind, raw_id: str | uuid.UUID, *, edit: bool = False) -> Any:
    """The active template ``raw_id`` of ``kind`` if ``who`` may read it (and change it, with
    ``edit``): 404 when it does not exist or they may not read it, 403 when they may only read it."""
    template_id = _template_id(raw_id)
    row = await store.get_active(conn, template_id, kind, lock=edit)
    if row is None or not await _readable(conn, who, row):
        raise errors.TaskTemplateNotFound(f"Template {template_id.hex} does not exist.")
    if edit and not _editable(who, row):
        raise errors.GenericForbidden("Only the template's owner or an admin of its domain may change it.")
    return row


async def _project(conn: Any, owner: Requester, domain: str | None, group: str | uuid.UUID | None,
                   field: str) -> uuid.UUID | None:
    """The project (by name or id) the templates go to: one of the owner's, in their domain."""
    if domain is not None and domain != owner.domain_name:
        raise _invalid(f"Invalid domain name: {domain}", "domain", "is not the owner's domain")
    if group is None:
        return None
    group_id = await keypair_store.resolve_group(conn, owner.domain_name, str(group), owner.user_uuid)
    if group_id is None:
        raise _invalid(f"Invalid group: {group}", field, "is not a project of the owner in their domain")
    return group_id


# ------------------------------------------------------------------ CRUD

async def create(ctx: ManagerContext, requester: Requester, kind: Kind, req: TemplateCreate) -> list[dict[str, str]]:
    """Store every template of the payload (all or none): ``[{"id", "user"}]`` (hex)."""
    owner = await resolve_owner(ctx, requester, req.owner_access_key)
    entries = await _entries_off_loop(req.payload)
    single = len(entries) == 1
    async with ctx.db.begin() as conn:
        default_group = await _project(conn, owner, req.domain, req.group, "group")
        rows: list[dict[str, Any]] = []
        for idx, entry in enumerate(entries):
            at = "payload" if single else f"payload[{idx}]"
            # the list form's user_uuid: only the owner's own
            if entry.user_uuid is not None and entry.user_uuid.replace("-", "") != owner.user_uuid.hex:
                raise _invalid("Invalid template", f"{at}.user_uuid",
                               "must be the owner's (use owner_access_key to store for another user)")
            normalised = _validated(kind, entry.document, at)
            if entry.name is not None:
                normalised["metadata"]["name"] = entry.name
            group_id = default_group
            if entry.group_id is not None:
                group_id = await _project(conn, owner, None, entry.group_id, f"{at}.group_id")
            rows.append({"id": uuid.uuid4(), "domain_name": owner.domain_name, "group_id": group_id,
                         "user_uuid": owner.user_uuid, "type": kind,
                         "name": normalised["metadata"]["name"], "template": normalised})
        await store.insert_templates(conn, rows)
    return [{"id": row["id"].hex, "user": owner.user_uuid.hex} for row in rows]


async def list_templates(ctx: ManagerContext, requester: Requester, kind: Kind,
                         q: TemplateListQuery) -> list[dict[str, Any]]:
    """The templates the requester may read (their own and their projects'); with ``all``:
    every one (superadmins) or every one of their domain (admins); users' ``all`` is ignored,
    as in the original."""
    async with ctx.db.connect() as conn:
        if q.list_all and requester.is_superadmin:
            rows = await store.list_active(conn, kind, group_id=q.group_id)
        elif q.list_all and requester.role == "admin":
            rows = await store.list_active(conn, kind, domain=requester.domain_name, group_id=q.group_id)
        else:
            rows = await store.list_active(conn, kind, visible_to=requester.user_uuid, group_id=q.group_id)
    return [{
        "name": row.name, "id": row.id.hex, "created_at": row.created_at.isoformat(),
        "is_owner": row.user_uuid == requester.user_uuid, "user": str(row.user_uuid),
        "group": str(row.group_id) if row.group_id else None, "user_email": row.user_email,
        "group_name": row.group_name, "domain_name": row.domain_name, "type": row.type.lower(),
        "template": row.template,
    } for row in rows]


async def get(ctx: ManagerContext, requester: Requester, kind: Kind, template_id: str,
              owner_access_key: str | None) -> dict[str, Any]:
    """The stored document (its ``metadata.name`` the template's name)."""
    who = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        row = await _row_for(conn, who, kind, template_id)
    stored: dict[str, Any] = dict(row.template)
    stored["metadata"] = {**stored.get("metadata", {}), "name": row.name}
    # JSONB keeps keys in its own order: give the top level the order people write it in
    first = [key for key in ("api_version", "kind", "mode", "metadata", "spec") if key in stored]
    return {**{key: stored[key] for key in first}, **stored}


async def update(ctx: ManagerContext, requester: Requester, kind: Kind, template_id: str,
                 req: TemplateCreate) -> None:
    """Replace the document (exactly one template) and, with ``group``, move it to that project."""
    who = await resolve_owner(ctx, requester, req.owner_access_key)
    entries = await _entries_off_loop(req.payload)
    if len(entries) != 1:
        raise _invalid("Invalid template", "payload", "an update takes exactly one template")
    [entry] = entries
    normalised = _validated(kind, entry.document, "payload")
    if entry.name is not None:
        normalised["metadata"]["name"] = entry.name
    async with ctx.db.begin() as conn:
        row = await _row_for(conn, who, kind, template_id, edit=True)
        values: dict[str, Any] = {"template": normalised, "name": normalised["metadata"]["name"]}
        group = entry.group_id or req.group
        if group is not None:  # a project of the owner's: only they may move it
            if row.user_uuid != who.user_uuid:
                raise errors.GenericForbidden("Only the template's owner may move it to another project.")
            values["group_id"] = await _project(conn, who, req.domain, group, "group")
        await store.update_template(conn, row.id, values)


async def delete(ctx: ManagerContext, requester: Requester, kind: Kind, template_id: str,
                 owner_access_key: str | None) -> None:
    """Deactivate the template (the original's soft delete)."""
    who = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.begin() as conn:
        row = await _row_for(conn, who, kind, template_id, edit=True)
        await store.deactivate(conn, row.id)


def to_yaml(document: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text


# ------------------------------------------------------------------ creating a session from a template

def git_clone_snippet(git: GitSpec) -> str:
    """Shell lines that clone the repository (at the branch, then the commit, when given) into
    the destination directory (default: git's, the repository's last path part). A credential
    reaches git through a private temporary credential file, never a command line."""
    repo = git.repository
    target = git.destination_dir or repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repository"
    clone = ["git"]
    lines = ["# the session template's git repository"]
    if git.credential is not None:
        parts = urlsplit(repo)
        url = (f"{parts.scheme}://{quote(git.credential.username, safe='')}:"
               f"{quote(git.credential.password, safe='')}@{parts.netloc.rsplit('@', 1)[-1]}")
        lines += ['_bai_git_cred="$(mktemp)"',  # mktemp makes it 0600
                  f'printf "%s\\n" {shlex.quote(url)} > "$_bai_git_cred"']
        clone += ["-c", '"credential.helper=store --file=$_bai_git_cred"']
    clone.append("clone")
    if git.branch:
        clone += ["-b", shlex.quote(git.branch)]
    clone += ["--", shlex.quote(repo), shlex.quote(target)]
    lines.append(" ".join(clone))
    if git.credential is not None:
        lines.append('rm -f "$_bai_git_cred"')
    if git.commit:
        lines.append(f"(cd {shlex.quote(target)} && git checkout -q {shlex.quote(git.commit)})")
    return "\n".join(lines) + "\n"


def _from_template(row: Any) -> tuple[dict[str, Any], GitSpec | None]:
    """The CreateSession fields a task template supplies, and its git settings."""
    doc = TaskTemplate.model_validate(row.template)
    spec, kernel = doc.spec, doc.spec.kernel
    fields: dict[str, Any] = {"image": kernel.image, "architecture": kernel.architecture,
                              "type": spec.session_type, "domain": row.domain_name}
    if row.group_name:
        fields["group"] = row.group_name
    if doc.metadata.tag:
        fields["tag"] = doc.metadata.tag
    if kernel.run is not None:
        if kernel.run.bootstrap:
            fields["bootstrap_script"] = kernel.run.bootstrap
        if kernel.run.startup_command:
            fields["startup_command"] = kernel.run.startup_command
    config: dict[str, Any] = {}
    if spec.scaling_group:
        config["scaling_group"] = spec.scaling_group
    if spec.mounts:
        config["mounts"] = list(spec.mounts)
        config["mount_map"] = {name: path for name, path in spec.mounts.items() if path}
    if kernel.environ:
        config["environ"] = kernel.environ
    if spec.resources:
        config["resources"] = spec.resources
    if spec.agent_list is not None:
        config["agent_list"] = spec.agent_list
    fields["config"] = config
    return fields, kernel.git


def _with_git(bootstrap: str | None, git: GitSpec) -> str:
    """The bootstrap script (text or base64) with the clone snippet after it, as base64."""
    script = script_text(bootstrap or "")
    if script and not script.endswith("\n"):
        script += "\n"
    return base64.b64encode((script + git_clone_snippet(git)).encode()).decode()


def merged_config(template: dict[str, Any], request: CreationConfig | None) -> dict[str, Any]:
    """The template's ``config`` with each key the request gives (not null) in its place.

    The official client always sends ``mounts``, an empty list when no ``-m`` is given: an empty
    list alone keeps the template's mounts. Its ``--no-mount`` sends an empty ``mount_map`` with
    it: then the session mounts nothing. Given mounts without a map keep the template's paths of
    those of them it mounts too."""
    given = request.model_dump(exclude_none=True) if request is not None else {}
    if given.get("mounts") == [] and "mount_map" not in given:
        del given["mounts"]
    if "mounts" in given and "mount_map" not in given:
        given["mount_map"] = {k: v for k, v in template.get("mount_map", {}).items() if k in given["mounts"]}
    return {**template, **given}


async def session_request(ctx: ManagerContext, requester: Requester, req: CreateFromTemplate) -> CreateSession:
    """The create request the template and ``req`` make together: the template's fields, each
    one ``req`` gives (not null; mounts as :func:`merged_config` says) in its place; with the
    template's git settings a clone snippet appended to the bootstrap script. Validated as
    ``POST /session``'s body, so it goes to the one creation path."""
    if req.template_id is None and req.image is None:
        raise _invalid("Either image or template_id is required", "template_id", "is required without image")
    fields: dict[str, Any] = {"config": {}}
    git: GitSpec | None = None
    if req.template_id is not None:
        who = await resolve_owner(ctx, requester, req.owner_access_key)
        async with ctx.db.connect() as conn:
            row = await _row_for(conn, who, TASK, req.template_id)
        fields, git = _from_template(row)
    override = req.model_dump(exclude_none=True, exclude={"template_id", "config"})
    config = merged_config(fields.pop("config"), req.config)
    fields.update(override)
    fields["config"] = config
    if git is not None:
        fields["bootstrap_script"] = _with_git(fields.get("bootstrap_script"), git)
    result: CreateSession = parse(CreateSession, fields)
    return result


async def cluster_request(ctx: ManagerContext, requester: Requester, req: CreateCluster) -> CreateSession:
    """The create request a cluster template makes: as many kernels as its nodes' replicas, in
    its mode, from its nodes' task templates. A session runs one image (as in the original's
    24.03), so the nodes' task templates must agree on image, architecture and resources; the
    first one's bootstrap, startup command and git settings are used, the cluster's environ is
    laid over its environ and the cluster's mounts replace its mounts."""
    who = await resolve_owner(ctx, requester, req.owner_access_key)
    async with ctx.db.connect() as conn:
        row = await _row_for(conn, who, CLUSTER, req.template_id)
        cluster = ClusterTemplate.model_validate(row.template)
        tasks = []
        for idx, node in enumerate(cluster.spec.nodes):
            try:
                tasks.append(await _row_for(conn, who, TASK, node.session_template))
            except errors.TaskTemplateNotFound:
                raise _invalid("Failed to find session template", f"spec.nodes[{idx}].session_template",
                               f"no session template {node.session_template.hex} the owner may read") from None
    made = [_from_template(task) for task in tasks]
    fields, git = made[0]

    def shape(f: dict[str, Any]) -> tuple[Any, ...]:
        return f["image"], f["architecture"], f["config"].get("resources")

    for idx, (other, _) in enumerate(made[1:], 1):
        if shape(other) != shape(fields):
            raise _invalid("Every node of a cluster runs the same image with the same resources",
                           f"spec.nodes[{idx}].session_template",
                           "its image, architecture or resources differ from the first node's")
    config = dict(fields.pop("config"))
    if cluster.spec.environ:
        config["environ"] = {**config.get("environ", {}), **cluster.spec.environ}
    if cluster.spec.mounts:
        config["mounts"] = list(cluster.spec.mounts)
        config["mount_map"] = {name: path for name, path in cluster.spec.mounts.items() if path}
    if req.scaling_group is not None:
        config["scaling_group"] = req.scaling_group
    fields.update(
        name=req.name, type=req.type, group=req.group, domain=req.domain, config=config,
        cluster_size=sum(node.replicas for node in cluster.spec.nodes), cluster_mode=cluster.mode,
        enqueue_only=req.enqueue_only, max_wait_seconds=req.max_wait_seconds)
    if req.tag is not None:
        fields["tag"] = req.tag
    if req.owner_access_key is not None:
        fields["owner_access_key"] = req.owner_access_key
    if git is not None:
        fields["bootstrap_script"] = _with_git(fields.get("bootstrap_script"), git)
    result: CreateSession = parse(CreateSession, fields)
    return result
