"""Admin and key security under attack, on real gateway processes per backend.

CSRF on cookie sessions, the Secure cookie behind a TLS proxy, atomic login throttling
across two replicas, the admin still getting in while a stranger hammers, a scheduled
revocation brought forward, and a flood of unknown key ids kept off the database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway_app import keys, migrations
from gateway_app.cli import EXIT_ERROR
from gateway_app.keys import KeyCache, generate_key
from gateway_app.storage import Database, connect
from tests.conftest import ADMIN_PASSWORD, BASE_ENV, SEED_KEY, backend_of, base_config
from tests.support.admin import ADMIN_EMAIL, AdminClient, bearer, login
from tests.support.processes import run_cli, wait_until

PER_ADDRESS = 5
PER_ACCOUNT = 12
REFRESH_SECONDS = 0.5


def _config(db_url: str) -> dict:
    config = base_config(db_url)
    config["auth"]["login_attempts_per_address"] = PER_ADDRESS
    config["auth"]["login_attempts_per_account"] = PER_ACCOUNT
    config["auth"]["key_cache_refresh_seconds"] = REFRESH_SECONDS
    return config


@pytest.fixture(scope="module")
def replicas(module_db_url, module_launcher):
    """Two gateway processes on one database."""
    first = module_launcher.gateway(_config(module_db_url))
    second = module_launcher.gateway(_config(module_db_url), seed=False)
    return first, second


@pytest.fixture(scope="module")
def gateway(replicas):
    return replicas[0]


def _key_names(url: str, token: str) -> list[str]:
    listed = httpx.get(url + "/admin/api/keys", headers=bearer(token)).json()["data"]
    return [k["name"] for k in listed]


# --- CSRF and the cookie ---------------------------------------------------------------


def test_cookie_write_from_a_foreign_origin_is_refused(gateway) -> None:
    token = login(gateway.url, client="10.10.0.1").json()["token"]
    cookies = {"gw_session": token}
    body = '{"service_account": "tests", "name": "csrf-victim"}'
    forged = httpx.post(
        gateway.url + "/admin/api/keys",
        content=body,
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        cookies=cookies,
    )
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "cross_origin_refused"
    assert "http://evil.example" in forged.json()["error"]["message"]
    # JSON does not help a foreign origin; the right origin does not make text/plain acceptable.
    foreign_json = httpx.post(
        gateway.url + "/admin/api/keys",
        content=body,
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
        cookies=cookies,
    )
    assert foreign_json.status_code == 403
    own_text = httpx.post(
        gateway.url + "/admin/api/keys",
        content=body,
        headers={"Content-Type": "text/plain", "Origin": gateway.url},
        cookies=cookies,
    )
    assert own_text.status_code == 415 and own_text.json()["error"]["param"] == "content-type"
    no_origin = httpx.post(
        gateway.url + "/admin/api/keys",
        content=body,
        headers={"Content-Type": "application/json"},
        cookies=cookies,
    )
    assert no_origin.status_code == 403
    null_origin = httpx.post(
        gateway.url + "/admin/api/keys/gwk_000000000000/revoke",  # 404 if it got through
        headers={"Content-Type": "application/json", "Origin": "null"},
        cookies=cookies,
    )
    assert null_origin.status_code == 403
    assert "csrf-victim" not in _key_names(gateway.url, token)
    # Login from a foreign page (login CSRF) is refused too.
    foreign_login = httpx.post(
        gateway.url + "/admin/api/session",
        json={"email": ADMIN_EMAIL, "password": "whatever"},
        headers={"Origin": "http://evil.example", "X-Forwarded-For": "10.10.0.2"},
    )
    assert foreign_login.status_code == 403


def test_cookie_write_from_its_own_origin_and_bearer_calls_pass(gateway) -> None:
    token = login(gateway.url, client="10.11.0.1").json()["token"]
    same_origin = httpx.post(
        gateway.url + "/admin/api/keys",
        json={"service_account": "tests", "name": "from-own-page"},
        headers={"Origin": gateway.url},
        cookies={"gw_session": token},
    )
    assert same_origin.status_code == 201
    by_referer = httpx.post(
        gateway.url + "/admin/api/keys",
        json={"service_account": "tests", "name": "from-own-referer"},
        headers={"Referer": gateway.url + "/admin/keys"},
        cookies={"gw_session": token},
    )
    assert by_referer.status_code == 201
    # Bearer tokens are never attached by a browser on its own: no origin rules for them.
    scripted = httpx.post(
        gateway.url + "/admin/api/keys",
        content='{"service_account": "tests", "name": "from-a-script"}',
        headers={**bearer(token), "Content-Type": "text/plain", "Origin": "http://elsewhere.example"},
    )
    assert scripted.status_code == 201
    names = _key_names(gateway.url, token)
    assert {"from-own-page", "from-own-referer", "from-a-script"} <= set(names)
    # Reads with the cookie need no origin at all.
    assert httpx.get(gateway.url + "/admin/api/me", cookies={"gw_session": token}).status_code == 200


def test_cookie_is_secure_behind_a_trusted_tls_proxy(gateway) -> None:
    # The test client is 127.0.0.1, a trusted proxy in the base config.
    plain = login(gateway.url, client="10.12.0.1")
    assert "Secure" not in plain.headers["set-cookie"]
    tls = httpx.post(
        gateway.url + "/admin/api/session",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-For": "10.12.0.1", "X-Forwarded-Proto": "https"},
    )
    assert tls.status_code == 200
    assert "; Secure" in tls.headers["set-cookie"]
    # Behind that proxy the page's origin is https://<host>: a write from it passes.
    host = gateway.url.removeprefix("http://")
    write = httpx.post(
        gateway.url + "/admin/api/keys",
        json={"service_account": "tests", "name": "over-tls"},
        headers={"Origin": f"https://{host}", "X-Forwarded-Proto": "https"},
        cookies={"gw_session": tls.json()["token"]},
    )
    assert write.status_code == 201


def test_forwarded_proto_from_an_untrusted_peer_is_ignored(module_db_url, databases, launcher) -> None:
    config = _config(databases.new(backend_of(module_db_url)))
    config["server"]["trusted_proxies"] = []
    untrusting = launcher.gateway(config)
    response = httpx.post(
        untrusting.url + "/admin/api/session",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 200
    assert "Secure" not in response.headers["set-cookie"]


# --- login throttling ------------------------------------------------------------------


async def _guess_in_parallel(urls: list[str], count: int, email: str, client: str) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as http:

        async def guess(i: int) -> int:
            response = await http.post(
                urls[i % len(urls)] + "/admin/api/session",
                json={"email": email, "password": f"guess-{i}"},
                headers={"X-Forwarded-For": client},
            )
            return response.status_code

        return await asyncio.gather(*(guess(i) for i in range(count)))


def test_parallel_guesses_across_replicas_verify_at_most_the_limit(replicas) -> None:
    statuses = asyncio.run(
        _guess_in_parallel([r.url for r in replicas], 100, "victim@example.com", "10.20.0.1")
    )
    verified = statuses.count(401)
    # 503: the store was too busy to count the attempt (SQLite shared by two processes), so it
    # was refused unverified. Anything else (a 500, a 200) fails the test.
    assert set(statuses) <= {401, 429, 503}
    assert 1 <= verified <= PER_ADDRESS


# --- keys --------------------------------------------------------------------------------


def _models_status(url: str, key: str) -> int:
    return httpx.get(url + "/v1/models", headers=bearer(key)).status_code


def test_scheduled_revocation_brought_forward(replicas) -> None:
    first, second = replicas
    admin = AdminClient(first.url)
    created = admin.post("/keys", {"service_account": "tests", "name": "leaky"})
    assert created.status_code == 201
    old_key = created.json()["key"]
    old_id = created.json()["public_id"]
    rotated = admin.post(f"/keys/{old_id}/rotate", {"revoke_old_after_seconds": 3600})
    assert rotated.status_code == 201
    assert rotated.json()["old"]["revoked_at"] > time.time() * 1000 + 3500_000
    # Still listed (a scheduled revocation is not a revocation yet) and still working.
    assert old_id in [k["public_id"] for k in admin.get("/keys").json()["data"]]
    wait_until(lambda: _models_status(second.url, old_key) == 200, timeout=10)
    # A later time never puts the revocation off.
    later = admin.post(f"/keys/{old_id}/revoke", {"after_seconds": 7200})
    assert later.status_code == 404
    revoked = admin.post(f"/keys/{old_id}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] <= time.time() * 1000
    started = time.monotonic()
    # Each replica reloads keys on its own timer: both refuse the key within the refresh bound
    # (plus process and polling slack).
    for replica in (second, first):
        wait_until(lambda url=replica.url: _models_status(url, old_key) == 401, timeout=10)
    assert time.monotonic() - started <= REFRESH_SECONDS + 2.0
    assert _models_status(second.url, rotated.json()["key"]) == 200
    assert admin.post(f"/keys/{old_id}/revoke").status_code == 404  # already revoked


def test_cli_brings_a_scheduled_revocation_forward(gateway) -> None:
    def cli(*args: str):
        return run_cli("keys", *args, "--config", str(gateway.config_path), env=BASE_ENV)

    created = cli("create", "--service-account", "tests", "--name", "cli-leaky")
    assert created.returncode == 0, created.stderr
    old_key = created.stdout.strip()
    old_id = old_key.split(".")[0].removeprefix("gwk_")
    assert cli("rotate", old_id, "--revoke-old-after", "1h").returncode == 0

    def revoked_at() -> int:
        listed = json.loads(cli("list", "--json").stdout)
        return next(k["revoked_at"] for k in listed if k["public_id"] == old_id)

    scheduled = revoked_at()
    assert scheduled > time.time() * 1000 + 3500_000
    put_off = cli("revoke", old_id, "--after", "2h")
    assert put_off.returncode == EXIT_ERROR and "brought forward, never put off" in put_off.stderr
    assert revoked_at() == scheduled
    sooner = cli("revoke", old_id, "--after", "10m")
    assert sooner.returncode == 0, sooner.stderr
    assert time.time() * 1000 + 500_000 < revoked_at() < time.time() * 1000 + 600_000
    assert _models_status(gateway.url, old_key) == 200
    assert cli("revoke", old_id).returncode == 0
    wait_until(lambda: _models_status(gateway.url, old_key) == 401, timeout=REFRESH_SECONDS + 2.0)


def test_unknown_key_flood_is_limited_before_the_database(gateway) -> None:
    def lookups() -> dict[str, float]:
        text = httpx.get(gateway.url + "/metrics").text
        out = {}
        for line in text.splitlines():
            if line.startswith("gateway_key_lookups_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                out[outcome] = float(line.rsplit(" ", 1)[1])
        return out

    before = lookups()
    started = time.monotonic()
    forged = [generate_key() for _ in range(400)]

    async def flood() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:

            async def one(key: str) -> int:
                return (await http.get(gateway.url + "/v1/models", headers=bearer(key))).status_code

            return await asyncio.gather(*(one(k) for k in forged))

    statuses = asyncio.run(flood())
    elapsed = time.monotonic() - started
    after = lookups()
    assert statuses == [401] * len(forged)
    queried = sum(after[o] - before.get(o, 0) for o in ("found", "unknown"))
    allowed = keys.UNKNOWN_LOOKUP_BURST + keys.UNKNOWN_LOOKUPS_PER_SECOND * elapsed
    assert queried <= allowed + 1
    assert after["limited"] - before.get("limited", 0) >= len(forged) - allowed - 1
    # The real seeded key is in memory and unaffected.
    assert _models_status(gateway.url, SEED_KEY) == 200


class _CountingDatabase:
    """A real database that counts the queries made through it."""

    def __init__(self, db):
        self._db = db
        self.queries = 0

    def __getattr__(self, name):
        attribute = getattr(self._db, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute"):

            async def counted(*args, **kwargs):
                self.queries += 1
                return await attribute(*args, **kwargs)

            return counted
        return attribute


@asynccontextmanager
async def _loaded_cache(db_url: str) -> AsyncIterator[tuple[Database, _CountingDatabase, KeyCache]]:
    """A migrated database, a query counter over it, and a KeyCache loaded from it."""
    database = await connect(db_url)
    try:
        await migrations.apply(database)
        counting = _CountingDatabase(database)
        cache = KeyCache(counting, refresh_seconds=60)
        await cache.refresh()
        counting.queries = 0
        yield database, counting, cache
    finally:
        await database.close()


async def test_key_cache_queries_for_unknown_ids_are_bounded(db_url) -> None:
    async with _loaded_cache(db_url) as (database, counting, cache):
        forged = [generate_key() for _ in range(500)]
        for key in forged:
            assert await cache.authenticate(key) is None
        # The same ids again: remembered, no query at all.
        for key in forged[:10]:
            assert await cache.authenticate(key) is None
        # 510 lookups in well under a second: the burst, plus what the rate refilled meanwhile.
        assert counting.queries <= keys.UNKNOWN_LOOKUP_BURST + 5
        assert cache.lookups["limited"] >= 500 - keys.UNKNOWN_LOOKUP_BURST - 5
        # A real key made after the flood is found by the next refresh.
        account = await keys.ensure_service_account(database, "flood-test")
        real = generate_key()
        await keys.insert_key(database, real, "real", account)
        await cache.refresh()
        assert await cache.authenticate(real) is not None


async def test_a_burst_with_a_key_not_loaded_yet_shares_one_lookup(db_url) -> None:
    """A key made on another replica moments ago, then 300 requests at once: one query, all in."""
    async with _loaded_cache(db_url) as (database, counting, cache):
        account = await keys.ensure_service_account(database, "burst-test")
        fresh = generate_key()
        await keys.insert_key(database, fresh, "fresh", account)  # not through the counter
        identities = await asyncio.gather(*(cache.authenticate(fresh) for _ in range(300)))
        assert all(i is not None and i.name == "fresh" for i in identities)
        assert counting.queries == 1
        assert cache.lookups["found"] == 1 and cache.lookups["joined"] == 299
        assert cache.lookups["limited"] == 0


class _HungDatabase:
    """A test double: a database whose lookups never answer."""

    async def fetchrow(self, *_args):
        await asyncio.Event().wait()


async def test_a_shared_lookup_on_a_hung_database_ends_at_its_deadline() -> None:
    cache = KeyCache(_HungDatabase(), refresh_seconds=60)
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(cache.authenticate(generate_key()) for _ in range(3)), return_exceptions=True
    )
    same_key = generate_key()
    shared = await asyncio.gather(*(cache.authenticate(same_key) for _ in range(50)), return_exceptions=True)
    elapsed = time.monotonic() - started
    everything = [*outcomes, *shared]
    assert all(isinstance(o, TimeoutError) for o in everything), {type(o) for o in everything}
    assert cache.lookups["joined"] == 49
    assert elapsed < 2 * keys.LOOKUP_TIMEOUT_SECONDS + 1, elapsed
    assert not cache._in_flight  # nothing left waiting on the hung database


# Last in this module: it spends the bootstrap admin's account-wide budget for new addresses,
# which the other tests (logging in from fresh addresses) need.
def test_admin_still_logs_in_from_own_address_while_a_stranger_hammers(replicas) -> None:
    first, second = replicas
    admin_address = "10.30.0.1"
    assert login(first.url, client=admin_address).status_code == 200  # a known address from now on
    attempts = []
    # More addresses than the account-wide budget needs: PER_ACCOUNT / PER_ADDRESS + 2.
    for n in range(PER_ACCOUNT // PER_ADDRESS + 2):
        attempts += asyncio.run(
            _guess_in_parallel([first.url, second.url], PER_ADDRESS + 3, ADMIN_EMAIL, f"10.40.0.{n + 1}")
        )
    assert attempts.count(401) <= PER_ACCOUNT  # the account-wide bound on guesses
    assert attempts.count(429) >= len(attempts) - PER_ACCOUNT
    # From an address never used by this admin, even the right password waits out the window...
    from_new_place = login(second.url, client="10.30.0.99")
    assert from_new_place.status_code == 429
    assert "new addresses" in from_new_place.json()["error"]["message"]
    # ...but the admin's own address still gets in, on either replica.
    assert login(first.url, client=admin_address).status_code == 200
    assert login(second.url, client=admin_address).status_code == 200
