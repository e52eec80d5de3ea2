"""Admin routes for request logs, the writer's queue and the spend report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_app import reports
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def register(router: AdminRouter, gateway: Gateway) -> None:
    async def list_logs(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": await reports.list_request_logs(gateway.database, request.query)})

    async def queue(request: AdminRequest) -> AdminResponse:
        writer = gateway.writer
        assert writer is not None
        return AdminResponse(
            200,
            {
                "depth": writer.depth,
                "dropped": writer.dropped,
                "written": writer.written,
                "write_errors": writer.write_errors,
            },
        )

    async def detail(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await reports.request_log_detail(gateway.database, request.params["id"]))

    async def spend(request: AdminRequest) -> AdminResponse:
        query = request.query
        return AdminResponse(
            200,
            {
                "data": await reports.spend_report(
                    gateway.database, query.get("group_by", "service_account"), query
                )
            },
        )

    router.add("GET", "/request-logs", list_logs)
    router.add("GET", "/request-logs/queue", queue)  # before {id}: the first match wins
    router.add("GET", "/request-logs/{id}", detail)
    router.add("GET", "/spend", spend)
