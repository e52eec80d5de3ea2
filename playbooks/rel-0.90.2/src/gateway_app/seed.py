"""seed-config: service accounts and keys declared in config, created or updated idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway_app.clock import now_ms
from gateway_app.config import GatewaySettings
from gateway_app.keys import encode_grants, ensure_service_account, insert_key, parse_key
from gateway_app.storage import Database


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


async def seed_config(db: Database, settings: GatewaySettings) -> SeedReport:
    report = SeedReport()
    async with db.transaction() as tx:
        for account in settings.service_accounts:
            ts = now_ms()
            account_id = await ensure_service_account(tx, account.name, source="config")
            window = account.budget.window if account.budget else None
            limit = round(account.budget.limit_usd * 1_000_000) if account.budget else None
            changed = await tx.execute(
                "UPDATE service_accounts SET budget_window = $1, budget_limit_micros = $2, updated_at = $3 "
                "WHERE id = $4 "
                "AND (budget_window IS DISTINCT FROM $1 OR budget_limit_micros IS DISTINCT FROM $2)",
                window,
                limit,
                ts,
                account_id,
            )
            if changed:
                report.updated.append(f"service_account/{account.name}")
            for key in account.keys:
                label = f"key/{account.name}/{key.name}"
                parsed = parse_key(key.secret.value)
                if parsed is None:
                    raise ValueError(
                        f"service_accounts[{account.name}].keys[{key.name}].secret ({key.secret}) "
                        "is not a gateway key of the form gwk_<12 chars [a-z0-9]>.<40 chars [A-Za-z0-9]>"
                    )
                public_id, digest = parsed
                row = await tx.fetchrow(
                    "SELECT id, secret_hash, name, service_account_id, model_grants, revoked_at "
                    "FROM api_keys WHERE public_id = $1",
                    public_id,
                )
                grants = encode_grants(key.models)
                if row is None:
                    await insert_key(tx, key.secret.value, key.name, account_id, key.models, source="config")
                    report.created.append(label)
                elif row["revoked_at"] is not None:
                    # A revoked key stays revoked: re-seeding must not undo a rotation.
                    report.unchanged.append(label + " (revoked)")
                elif (row["secret_hash"], row["name"], row["service_account_id"], row["model_grants"]) != (
                    digest,
                    key.name,
                    account_id,
                    grants,
                ):
                    await tx.execute(
                        "UPDATE api_keys SET secret_hash = $1, name = $2, service_account_id = $3, "
                        "model_grants = $4, updated_at = $5 WHERE id = $6",
                        digest,
                        key.name,
                        account_id,
                        grants,
                        now_ms(),
                        row["id"],
                    )
                    report.updated.append(label)
                else:
                    report.unchanged.append(label)
    return report
