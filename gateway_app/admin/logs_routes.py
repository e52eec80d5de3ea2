"""Admin routes for request logs, the writer's queue and the spend report."""

from __future__ import annotations

from gateway_app import reports
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.request_log import RequestLogWriter
from gateway_app.storage import Database


class LogsRoutes:
    def __init__(self, db: Database, writer: RequestLogWriter):
        self._db = db
        self._writer = writer

    def register(self, router: AdminRouter) -> None:
        router.add("GET", "/request-logs", self.list_logs)
        router.add("GET", "/request-logs/queue", self.queue)  # before {id}: the first match wins
        router.add("GET", "/request-logs/{id}", self.detail)
        router.add("GET", "/spend", self.spend)

    async def list_logs(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": await reports.list_request_logs(self._db, request.query)})

    async def queue(self, request: AdminRequest) -> AdminResponse:
        writer = self._writer
        return AdminResponse(
            200,
            {
                "depth": writer.depth,
                "dropped": writer.dropped,
                "written": writer.written,
                "write_errors": writer.write_errors,
            },
        )

    async def detail(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await reports.request_log_detail(self._db, request.params["id"]))

    async def spend(self, request: AdminRequest) -> AdminResponse:
        query = request.query
        return AdminResponse(
            200,
            {"data": await reports.spend_report(self._db, query.get("group_by", "service_account"), query)},
        )
