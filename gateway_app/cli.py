"""The operator CLI: `gateway <command>` (or `python -m gateway_app <command>`).

Exit codes: 0 success; 1 a check found something to do (pending migrations);
2 an error (bad config, unreachable database, refused history), printed as
one precise line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway_app import __version__, migrations
from gateway_app.clock import now_ms
from gateway_app.config import ConfigError, GatewaySettings, config_path, load_settings, parse_duration
from gateway_app.storage import Database, DatabaseUnavailable, connect

EXIT_OK, EXIT_PENDING, EXIT_ERROR = 0, 1, 2
# A migrator waits this long for another process's migration to finish.
_MIGRATE_LOCK_WAIT_SECONDS = 120.0


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _with_db(
    settings: GatewaySettings, work: Callable[[Database], Awaitable[int]], timeout: float | None = None
) -> int:
    db = await connect(
        settings.database.url.value, 1, 2, timeout or settings.database.connect_timeout_seconds
    )
    try:
        return await work(db)
    finally:
        await db.close()


# --- commands --------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app import log
    from gateway_app.server import StartupRefused, serve

    log.configure(settings.server.log_level)
    try:
        return serve(settings, str(config_path(args.config)))
    except StartupRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def cmd_migrate(args: argparse.Namespace, settings: GatewaySettings) -> int:
    async def work(db: Database) -> int:
        if args.reset:
            if not args.confirm_reset:
                print(
                    "error: --reset drops every gateway table; add --confirm-reset to proceed",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            dropped = await migrations.reset(db)
            print(f"dropped {len(dropped)} tables: {', '.join(dropped) or '(none)'}")
            return EXIT_OK
        if args.apply:
            applied = await migrations.apply(db)
            for m in applied:
                print(f"applied {m.version:04d}_{m.name}")
            print((await migrations.check(db)).summary())
            return EXIT_OK
        status = await migrations.check(db)
        if args.status:
            for version, name in status.applied:
                print(f"{version:04d}_{name}  applied")
            for m in status.pending:
                print(f"{m.version:04d}_{m.name}  pending")
            for version in status.ahead:
                print(f"{version:04d}  applied by a newer release (additive)")
        print(status.summary())
        return EXIT_PENDING if status.pending else EXIT_OK

    return await _with_db(settings, work, timeout=_MIGRATE_LOCK_WAIT_SECONDS)


async def cmd_bootstrap_admin(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app.admin.users import bootstrap_admin

    async def work(db: Database) -> int:
        outcome = await bootstrap_admin(db, settings, reset_password=args.reset_password)
        email = settings.auth.bootstrap_admin.email
        if outcome == "disabled":
            print("bootstrap admin is disabled in the active config (auth.bootstrap_admin.enabled: false)")
        else:
            print(f"bootstrap admin {email}: {outcome}")
        return EXIT_OK

    return await _with_db(settings, work)


async def cmd_seed_config(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app.seed import seed_config

    async def work(db: Database) -> int:
        report = await seed_config(db, settings)
        for label in report.created:
            print(f"created {label}")
        for label in report.updated:
            print(f"updated {label}")
        for label in report.unchanged:
            print(f"unchanged {label}")
        return EXIT_OK

    return await _with_db(settings, work)


async def cmd_keys(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app import keys
    from gateway_app.errors import NotFound

    async def work(db: Database) -> int:
        if args.keys_command == "create":
            models = keys.validate_grants(
                "all" if args.models == "all" else args.models.split(","), [m.name for m in settings.models]
            )
            key, _ = await keys.create_key(
                db,
                args.service_account,
                args.name,
                models,
                parse_duration(args.expires_in) if args.expires_in else None,
                source="cli",
                create_account=True,
            )
            print(key)  # the only time the secret is ever shown
            return EXIT_OK
        if args.keys_command == "list":
            listed = await keys.list_keys(db, include_revoked=args.all)
            if args.json:
                _print_json(listed)
            else:
                at = now_ms()
                for k in listed:
                    revoked_at = k["revoked_at"]
                    state = "active" if revoked_at is None else "revoked" if revoked_at <= at else "revoking"
                    models_text = k["models"] if k["models"] == "all" else ",".join(k["models"])
                    owner = f"{k['service_account']}/{k['name']}"
                    print(f"{k['public_id']}  {state:8} {owner}  models={models_text}")
            return EXIT_OK
        public_id = keys.normalize_public_id(args.public_id)
        refresh = f"{settings.auth.key_cache_refresh_seconds:g}s"
        if args.keys_command == "rotate":
            after = parse_duration(args.revoke_old_after) if args.revoke_old_after else None
            try:
                key, new, _ = await keys.rotate_key(db, public_id, after, source="cli")
            except NotFound as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_ERROR
            print(key)  # the only time the new secret is ever shown
            old_fate = (
                "stays active until revoked"
                if after is None
                else f"is revoked in {args.revoke_old_after} (plus up to {refresh} on every replica)"
            )
            print(
                f"rotated gwk_{public_id} -> gwk_{new['public_id']}; the old key {old_fate}", file=sys.stderr
            )
            return EXIT_OK
        after = parse_duration(args.after) if args.after else 0
        if await keys.revoke_key(db, public_id, after):
            when = f"in {args.after}" if after else "now"
            print(f"revoked gwk_{public_id} {when}; every replica refuses it within {refresh} after that")
            return EXIT_OK
        print(
            f"error: no key gwk_{public_id} that is active or scheduled to be revoked later "
            "(a scheduled revocation can be brought forward, never put off)",
            file=sys.stderr,
        )
        return EXIT_ERROR

    return await _with_db(settings, work)


async def cmd_service_accounts(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app import accounts
    from gateway_app.errors import Conflict, NotFound

    def budget_arg() -> tuple[str, int] | None:
        if args.window is None and args.limit_usd is None:
            return None
        return accounts.parse_budget({"window": args.window, "limit_usd": args.limit_usd})

    async def work(db: Database) -> int:
        command = args.sa_command
        try:
            if command == "list":
                listed = await accounts.list_service_accounts(db)
                if args.json:
                    _print_json(listed)
                    return EXIT_OK
                for a in listed:
                    b = a["budget"]
                    budget = (
                        f"{b['window']} ${b['spent_usd']:.4f}/${b['limit_usd']:.2f}" if b else "no budget"
                    )
                    print(f"{a['name']}  {'disabled' if a['disabled'] else 'enabled':8} {budget}")
                return EXIT_OK
            if command == "create":
                account = await accounts.create_service_account(db, args.name, budget_arg(), source="cli")
            elif command in ("disable", "enable"):
                account = await accounts.set_disabled(db, args.name, command == "disable")
            else:
                budget = None if args.clear else budget_arg()
                if budget is None and not args.clear:
                    raise ValueError("set-budget needs --window and --limit-usd, or --clear")
                account = await accounts.set_budget(db, args.name, budget)
        except (NotFound, Conflict) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        _print_json(account)
        return EXIT_OK

    return await _with_db(settings, work)


async def cmd_purge_request_logs(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app.purge import purge_request_logs

    async def work(db: Database) -> int:
        report = await purge_request_logs(db, args.retention, dry_run=args.dry_run)
        if args.json:
            _print_json(report.as_dict())
            return EXIT_OK
        verb = "would delete" if args.dry_run else "deleted"
        print(f"request logs older than {args.retention} (created before {report.cutoff_ms} ms):")
        for table, count in report.tables.items():
            print(f"  {table}: {verb} {count}")
        print(f"  usage_cost_events: untouched ({report.ledger_rows} rows)")
        return EXIT_OK

    return await _with_db(settings, work)


async def cmd_cache(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app.response_cache import CacheUnavailable, build_response_cache, store_kind

    cache = build_response_cache(settings)
    if cache is None:
        print("error: no model uses the response cache (a model opts in with `cache: {ttl_seconds: N}`)",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    try:
        if store_kind(settings) != "redis":
            print(
                "error: the response cache is in process (no rate_limits.redis_url): its entries live in "
                "each serving instance; flush them with POST /admin/api/cache/flush on every instance "
                "(playbooks/cache_flush.yml)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        models = cache.select(args.model, args.pattern)
        flushed = await cache.flush(models)
    except (LookupError, CacheUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        await cache.close()
    print(f"flushed {flushed} entries of {', '.join(models or cache.models)} (redis store)")
    return EXIT_OK


def cmd_config_validate(args: argparse.Namespace, settings: GatewaySettings) -> int:
    print(
        f"config {config_path(args.config)} is valid: {len(settings.providers)} provider(s), "
        f"{len(settings.models)} model(s), {len(settings.service_accounts)} service account(s)"
    )
    return EXIT_OK


async def cmd_probe_endpoints(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway_app.endpoint_probe import as_dicts, probe_endpoints

    results = await probe_endpoints(settings, args.timeout)
    if args.json:
        _print_json(as_dicts(results))
    else:
        for r in results:
            answer = f"HTTP {r.status}" if r.ok else f"failed: {r.error}"
            print(f"{r.provider}/{r.region}  {r.latency_ms:8.1f} ms  {answer}  {r.url}")
    return EXIT_OK


# --- parser ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="gateway YAML config (default: $GATEWAY_CONFIG)")

    sub.add_parser("version", help="print the release version")
    sub.add_parser("serve", parents=[common], help="run the gateway")

    migrate = sub.add_parser("migrate", parents=[common], help="inspect or apply schema migrations")
    mode = migrate.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 0 if current, 1 if pending, 2 on error")
    mode.add_argument("--apply", action="store_true", help="apply pending migrations (under a database lock)")
    mode.add_argument("--status", action="store_true", help="list applied and pending migrations")
    mode.add_argument("--reset", action="store_true", help="drop every gateway table (needs --confirm-reset)")
    migrate.add_argument("--confirm-reset", action="store_true")

    bootstrap = sub.add_parser(
        "bootstrap-admin", parents=[common], help="create the bootstrap admin if absent"
    )
    bootstrap.add_argument(
        "--reset-password", action="store_true", help="set the configured password even if the admin exists"
    )
    sub.add_parser(
        "seed-config", parents=[common], help="create/update service accounts and keys from config"
    )

    config = sub.add_parser("config", help="config commands")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("validate", parents=[common], help="validate the config and its secret references")

    keys = sub.add_parser("keys", help="gateway API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", parents=[common], help="create a key; prints it once")
    create.add_argument("--service-account", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--models", default="all", help="'all' or a comma-separated list")
    create.add_argument("--expires-in", help="e.g. 30d")
    listing = keys_sub.add_parser("list", parents=[common], help="list keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    revoke = keys_sub.add_parser(
        "revoke",
        parents=[common],
        help="revoke a key by public id; brings a scheduled revocation (rotation grace) forward",
    )
    revoke.add_argument("public_id")
    revoke.add_argument(
        "--after", help="revoke this far ahead instead of now, e.g. 10m (never later than scheduled)"
    )
    rotate = keys_sub.add_parser(
        "rotate", parents=[common], help="replace a key (same owner, grants, budget); prints the new key once"
    )
    rotate.add_argument("public_id")
    rotate.add_argument(
        "--revoke-old-after", help="schedule the old key's revocation, e.g. 1h (0s: now); default: keep it"
    )

    accounts = sub.add_parser("service-accounts", help="service accounts and budgets")
    sa_sub = accounts.add_subparsers(dest="sa_command", required=True)
    sa_list = sa_sub.add_parser("list", parents=[common], help="accounts with budget and current spend")
    sa_list.add_argument("--json", action="store_true")
    for name, text in (
        ("create", "create an account"),
        ("disable", "disable an account: its keys stop working"),
        ("enable", "enable a disabled account"),
        ("set-budget", "set or clear an account's budget"),
    ):
        command = sa_sub.add_parser(name, parents=[common], help=text)
        command.add_argument("name")
        if name in ("create", "set-budget"):
            command.add_argument("--window", choices=["daily", "weekly", "monthly"])
            command.add_argument("--limit-usd", type=float)
        if name == "set-budget":
            command.add_argument("--clear", action="store_true", help="remove the budget")

    purge = sub.add_parser(
        "purge-request-logs", parents=[common], help="delete request logs past retention (never the ledger)"
    )
    purge.add_argument("--retention", required=True, choices=["1d", "3d", "7d"])
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    purge.add_argument("--json", action="store_true")

    probe = sub.add_parser(
        "probe-endpoints",
        parents=[common],
        help="time a GET <base_url>/models to every provider endpoint (no credential sent)",
    )
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds per probe (default 5)")
    probe.add_argument("--json", action="store_true")

    cache = sub.add_parser("cache", help="the response cache in Redis (in-process: admin API)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cache_flush = cache_sub.add_parser(
        "flush", parents=[common], help="delete cached answers from Redis: all, a model, or a model-name glob"
    )
    which = cache_flush.add_mutually_exclusive_group()
    which.add_argument("--model", help="one cached model")
    which.add_argument("--pattern", help="models whose name matches this glob, e.g. 'gpt-4*'")
    return parser


_ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, GatewaySettings], Awaitable[int]]] = {
    "migrate": cmd_migrate,
    "bootstrap-admin": cmd_bootstrap_admin,
    "seed-config": cmd_seed_config,
    "keys": cmd_keys,
    "service-accounts": cmd_service_accounts,
    "purge-request-logs": cmd_purge_request_logs,
    "probe-endpoints": cmd_probe_endpoints,
    "cache": cmd_cache,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return EXIT_OK
    try:
        settings = load_settings(args.config)
        if args.command == "serve":
            return cmd_serve(args, settings)
        if args.command == "config":
            return cmd_config_validate(args, settings)
        return asyncio.run(_ASYNC_COMMANDS[args.command](args, settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (DatabaseUnavailable, migrations.MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
