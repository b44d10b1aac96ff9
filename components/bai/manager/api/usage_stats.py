"""/resource/stats/* and /resource/usage/*: resource use over time and the usage report (the
original's routes; the per-project series is ours). Logic and scoping in services.usage_stats."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from bai.manager import errors
from bai.manager.services import usage_stats as svc
from bai.manager.services.schemas import parse

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

Interval = Literal["15m", "1h", "1d"]
_PROBLEMS = (errors.InvalidAPIParameters, errors.GenericForbidden)


class SeriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: Interval = Field("15m", description="Bucket length.")
    days: Annotated[int, Field(ge=1, le=svc.MAX_SERIES_DAYS)] = Field(
        svc.MAX_SERIES_DAYS, description="How far back the series goes; the last bucket holds now.")


class ProjectSeriesQuery(SeriesQuery):
    project_id: uuid.UUID = Field(description="The project (group) id.")


class PeriodQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group_id: uuid.UUID | None = Field(None, description="Only this project.")
    start_date: Annotated[str, Field(pattern=r"^\d{8}$")] = Field(description="First day, yyyymmdd (UTC).")
    end_date: Annotated[str, Field(pattern=r"^\d{8}$")] = Field(description="Last day, yyyymmdd, included.")


class MonthQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    month: Annotated[str, Field(pattern=r"^\d{6}$")] = Field(description="yyyymm (UTC).")
    group_ids: Annotated[list[uuid.UUID], Field(max_length=100)] | None = Field(
        None, description="Only these projects (also accepted comma-separated).")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class Figure(_Reply):
    value: float
    unit_hint: Literal["count", "bytes"]


class Bucket(_Reply):
    date: int = Field(description="The bucket's start, Unix seconds.")
    num_sessions: Figure = Field(description="Sessions that held resources at some time in the bucket.")
    cpu_allocated: Figure = Field(description="CPU cores occupied, averaged over the bucket.")
    mem_allocated: Figure = Field(description="Memory bytes occupied, averaged over the bucket.")
    gpu_allocated: Figure = Field(description="cuda.* slots occupied, averaged over the bucket.")


class ProjectUsage(_Reply):
    domain_name: str
    g_id: str
    g_name: str
    c_infos: list[dict[str, object]]


class Series(RootModel[list[Bucket]]):
    pass


class Report(RootModel[list[ProjectUsage]]):
    pass


def _window(q: SeriesQuery) -> svc.SeriesWindow:
    return svc.series_window(q.interval, q.days)


@auth_required()
async def user_month(request: web.Request) -> web.Response:
    q = routing.query(request, SeriesQuery)
    return web.json_response(await svc.user_series(request.app[CTX], requester(request), _window(q)))


@auth_required()
async def admin_month(request: web.Request) -> web.Response:
    q = routing.query(request, SeriesQuery)
    return web.json_response(await svc.admin_series(request.app[CTX], requester(request), _window(q)))


@auth_required()
async def project_month(request: web.Request) -> web.Response:
    q = routing.query(request, ProjectSeriesQuery)
    return web.json_response(
        await svc.project_series(request.app[CTX], requester(request), q.project_id, _window(q)))


@auth_required()
async def usage_period(request: web.Request) -> web.Response:
    q = routing.query(request, PeriodQuery)
    start, end = svc.period_bounds(q.start_date, q.end_date)
    groups = None if q.group_id is None else (q.group_id,)
    return web.json_response(await svc.usage_report(request.app[CTX], requester(request), start, end, groups))


@auth_required()
async def usage_month(request: web.Request) -> web.Response:
    # The official client sends these as a JSON body on a GET; a query string works too.
    if request.can_read_body:
        try:
            raw = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise errors.InvalidAPIParameters("Malformed body") from None
    else:
        raw = dict(request.query)
        ids = [i for v in request.query.getall("group_ids", []) for i in v.split(",") if i]
        if "group_ids" in raw:
            raw["group_ids"] = ids
    q: MonthQuery = parse(MonthQuery, raw)
    start, end = svc.month_bounds(q.month)
    groups = tuple(q.group_ids) if q.group_ids else None
    return web.json_response(await svc.usage_report(request.app[CTX], requester(request), start, end, groups))


def routes(app: web.Application) -> None:
    series = Answer(200, "One bucket per interval, oldest first, empty ones included.", Series)
    report = Answer(200, "Per project: totals and the kernels.", Report)
    routing.add(app, "GET", "/resource/stats/user/month", user_month, operation_id="usage_stats_user",
                tag="resource", query=SeriesQuery, answers=(series,), problems=_PROBLEMS,
                summary="The caller's resource use over the last days, in fixed buckets.")
    routing.add(app, "GET", "/resource/stats/admin/month", admin_month, operation_id="usage_stats_admin",
                tag="resource", query=SeriesQuery, answers=(series,), problems=_PROBLEMS,
                summary="Everyone's resource use the caller administers (a domain admin: their domain's).")
    routing.add(app, "GET", "/resource/stats/project/month", project_month, operation_id="usage_stats_project",
                tag="resource", query=ProjectSeriesQuery, answers=(series,),
                problems=(*_PROBLEMS, errors.GroupNotFound),
                summary="A project's resource use over the last days (admins of its domain).")
    routing.add(app, "GET", "/resource/usage/period", usage_period, operation_id="usage_report_period",
                tag="resource", query=PeriodQuery, answers=(report,), problems=_PROBLEMS,
                summary="The kernels that ran between two dates (at most 100 days), per project.")
    routing.add(app, "GET", "/resource/usage/month", usage_month, operation_id="usage_report_month",
                tag="resource", query=MonthQuery, answers=(report,), problems=_PROBLEMS,
                summary="The kernels that ran in a month, per project.")
