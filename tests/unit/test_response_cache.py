"""The response cache in process: hit and miss, TTL, scope, LRU bounds, what is never cached,
the ledger row of a hit, budgets, metrics, and the admin flush and warm."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import pytest

from gateway_app.config import parse_settings
from gateway_app.response_cache import CACHE_PROVIDER, CachedAnswer, MemoryStore, ModelStats, cache_key
from tests.conftest import BASE_ENV, SEED_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.unit.conftest import InProcessGateway, StartGateway, auth, sqlite_config

CHAT = {"model": "cached-1", "messages": [{"role": "user", "content": "hello cache"}], "temperature": 0}
EMBED = {"model": "cached-1", "input": ["one", "two"]}


def cached_config(tmp_path: Path, upstream_url: str, **cache: Any) -> dict[str, Any]:
    """The base config plus 'cached-1' on the fake upstream (countable calls) with `cache`."""
    config = sqlite_config(tmp_path)
    config["providers"].append(
        {"name": "fake", "type": "openai_compat", "base_url": upstream_url, "pricing_provider_id": "openai"}
    )
    config["models"].append(
        {
            "name": "cached-1",
            "operations": ["chat", "embeddings"],
            "routes": [{"provider": "fake", "upstream_model": "gpt-4o-mini"}],
            "cache": {"ttl_seconds": 60, **cache},
        }
    )
    return config


@pytest.fixture
async def cached(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]
) -> tuple[InProcessGateway, FakeUpstream]:
    upstream, url = fake_upstream
    return await start_gateway(cached_config(tmp_path, url)), upstream


async def _chat(gw: InProcessGateway, body: dict[str, Any], key: str = SEED_KEY, **headers: str):
    return await gw.client.post("/v1/chat/completions", headers={**auth(key), **headers}, json=body)


async def _until(call, done, timeout: float = 15.0):
    """call() again (bounded) until done(answer): keys and budgets reach replicas by refresh."""
    deadline = time.monotonic() + timeout
    answer = await call()
    while not done(answer) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        answer = await call()
    return answer


async def _ledger(gw: InProcessGateway) -> list[dict[str, Any]]:
    writer = gw.app.gateway.started.writer
    assert writer is not None
    while await writer.flush():
        pass
    rows = await gw.app.gateway.started.db.fetch(
        "SELECT provider, upstream_model, prompt_tokens, completion_tokens, cost_micros, pricing_status "
        "FROM usage_cost_events ORDER BY id"
    )
    return [dict(r) for r in rows]


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_second_identical_request_is_a_hit_without_an_upstream_call(cached) -> None:
    gw, upstream = cached
    first = await _chat(gw, CHAT)
    assert first.status_code == 200 and first.headers["x-gateway-cache"] == "miss"
    # Same request, keys in another order and stream: false spelled out: the same entry.
    reordered = {"temperature": 0, "stream": False, "messages": CHAT["messages"], "model": "cached-1"}
    second = await _chat(gw, reordered)
    assert second.status_code == 200 and second.headers["x-gateway-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert upstream.requests == 1
    other = await _chat(gw, {**CHAT, "messages": [{"role": "user", "content": "something else"}]})
    assert other.headers["x-gateway-cache"] == "miss" and upstream.requests == 2

    embed = [await gw.client.post("/v1/embeddings", headers=auth(), json=EMBED) for _ in range(2)]
    assert [e.headers["x-gateway-cache"] for e in embed] == ["miss", "hit"]
    assert embed[0].json() == embed[1].json() and upstream.requests == 3

    metrics = (await gw.client.get("/metrics")).text
    assert _metric(metrics, "gateway_cache_hits_total", model="cached-1") == 2
    assert _metric(metrics, "gateway_cache_misses_total", model="cached-1") == 3
    assert _metric(metrics, "gateway_cache_stores_total", model="cached-1") == 3
    assert _metric(metrics, "gateway_cache_entries") == 3


async def test_a_hit_writes_a_ledger_row_at_zero_cost_named_cache(cached) -> None:
    gw, _ = cached
    await _chat(gw, CHAT)
    await _chat(gw, CHAT)
    miss, hit = await _ledger(gw)
    assert miss["provider"] == "fake" and miss["cost_micros"] > 0 and miss["prompt_tokens"] == 7
    assert hit == {
        "provider": CACHE_PROVIDER,
        "upstream_model": "gpt-4o-mini",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_micros": 0,
        "pricing_status": "priced",
    }
    logs = await gw.app.gateway.started.db.fetch("SELECT provider, status_code FROM request_logs ORDER BY id")
    assert [(r["provider"], r["status_code"]) for r in logs] == [("fake", 200), (CACHE_PROVIDER, 200)]


async def test_entries_expire_after_their_ttl(cached, monkeypatch: pytest.MonkeyPatch) -> None:
    gw, upstream = cached
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "hit"
    later = time.monotonic() + 61  # the model's ttl_seconds is 60
    monkeypatch.setattr("gateway_app.response_cache.time.monotonic", lambda: later)
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    assert upstream.requests == 2
    assert gw.app.gateway.started.response_cache.stats["cached-1"].expired == 1


async def test_entries_are_never_shared_across_service_accounts(cached) -> None:
    gw, upstream = cached
    admin = await gw.admin_headers()
    made = await gw.client.post("/admin/api/service-accounts", headers=admin, json={"name": "other"})
    assert made.status_code in (200, 201), made.text
    keys = {}
    for account, name in (("tests", "second"), ("other", "first")):
        made = await gw.client.post(
            "/admin/api/keys", headers=admin, json={"service_account": account, "name": name}
        )
        assert made.status_code in (200, 201), made.text
        keys[account] = made.json()["key"]
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    # Another key of the same account shares the entry; another account never does.
    answer = await _until(lambda: _chat(gw, CHAT, keys["tests"]), lambda a: a.status_code != 401)
    assert answer.headers["x-gateway-cache"] == "hit"
    answer = await _until(lambda: _chat(gw, CHAT, keys["other"]), lambda a: a.status_code != 401)
    assert answer.headers["x-gateway-cache"] == "miss"
    assert upstream.requests == 2


async def test_a_key_without_the_model_grant_gets_no_cached_answer(cached) -> None:
    gw, _ = cached
    admin = await gw.admin_headers()
    made = await gw.client.post(
        "/admin/api/keys",
        headers=admin,
        json={"service_account": "tests", "name": "echo-only", "models": ["echo-1"]},
    )
    assert made.status_code in (200, 201), made.text
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    answer = await _until(lambda: _chat(gw, CHAT, made.json()["key"]), lambda a: a.status_code != 401)
    assert answer.status_code == 404 and "x-gateway-cache" not in answer.headers
    assert answer.json()["error"]["code"] == "model_not_found"


async def test_errors_streams_and_sampling_requests_are_not_cached(cached) -> None:
    gw, upstream = cached
    upstream.mode = "error500"
    for _ in range(2):
        failed = await _chat(gw, CHAT)
        assert failed.status_code == 502 and "x-gateway-cache" not in failed.headers
    upstream.mode = "ok"
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"  # the errors left nothing behind

    sampled = {**CHAT, "temperature": 0.7}
    unset = {k: v for k, v in CHAT.items() if k != "temperature"}
    for body in (sampled, sampled, unset, unset):
        assert (await _chat(gw, body)).headers["x-gateway-cache"] == "bypass"
    stream = await _chat(gw, {**CHAT, "stream": True})
    assert stream.status_code == 200 and stream.headers["x-gateway-cache"] == "bypass"
    assert (await _chat(gw, CHAT, **{"Cache-Control": "no-store"})).headers["x-gateway-cache"] == "bypass"
    # no-cache: skip the lookup, store the fresh answer.
    refreshed = await _chat(gw, CHAT, **{"Cache-Control": "no-cache"})
    assert refreshed.headers["x-gateway-cache"] == "miss"
    stats = gw.app.gateway.started.response_cache.stats["cached-1"]
    assert stats.bypassed == {"sampled": 4, "stream": 1, "no_store": 1} and stats.hits == 0
    # Nothing to do for a model without `cache`: no header, no lookup.
    echo = await _chat(gw, {"model": "echo-1", "messages": CHAT["messages"], "temperature": 0})
    assert echo.status_code == 200 and "x-gateway-cache" not in echo.headers
    assert upstream.requests == 10  # 2 errors, 1 miss, 6 bypassed, 1 refresh


async def test_sampled_opt_in_caches_sampling_requests(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    upstream, url = fake_upstream
    gw = await start_gateway(cached_config(tmp_path, url, sampled=True))
    body = {"model": "cached-1", "messages": [{"role": "user", "content": "tell a joke"}]}
    assert [(await _chat(gw, body)).headers["x-gateway-cache"] for _ in range(2)] == ["miss", "hit"]
    assert upstream.requests == 1


async def test_no_cache_state_at_all_when_no_model_opts_in(gateway: InProcessGateway) -> None:
    assert gateway.app.gateway.started.response_cache is None
    assert gateway.app.gateway.started.data_plane._cache is None  # the data plane skips every cache step
    answer = await _chat(gateway, {"model": "echo-1", "messages": CHAT["messages"], "temperature": 0})
    assert answer.status_code == 200 and "x-gateway-cache" not in answer.headers
    assert "gateway_cache_" not in (await gateway.client.get("/metrics")).text
    admin = await gateway.admin_headers()
    state = await gateway.client.get("/admin/api/cache", headers=admin)
    assert state.json() == {"enabled": False, "store": "memory", "models": {}}
    flush = await gateway.client.post("/admin/api/cache/flush", headers=admin, json={})
    assert flush.status_code == 409 and flush.json()["error"]["code"] == "cache_disabled"


async def test_an_account_out_of_budget_is_refused_even_for_a_cached_answer(cached) -> None:
    gw, _ = cached
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    admin = await gw.admin_headers()
    set_budget = await gw.client.put(
        "/admin/api/service-accounts/tests/budget",
        headers=admin,
        json={"window": "daily", "limit_usd": 0.000001},
    )
    assert set_budget.status_code == 200, set_budget.text
    budgets = gw.app.gateway.started.budgets
    assert budgets is not None
    answer = await _until(lambda: _chat(gw, CHAT), lambda a: a.status_code != 200)
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"


def test_memory_store_evicts_least_recently_used_past_its_bounds() -> None:
    settings = parse_settings(
        {
            **copy.deepcopy(sqlite_config(Path("/tmp"))),
            "response_cache": {"max_entries": 3, "max_bytes": 4096},
        },
        environ=BASE_ENV,
    ).response_cache
    stats: dict[str, ModelStats] = {}
    store = MemoryStore(settings, lambda m: stats.setdefault(m, ModelStats()))

    def answer(size: int) -> CachedAnswer:
        return CachedAnswer(b"x" * size, "application/json", "up")

    async def scenario() -> None:
        for key in ("a", "b", "c"):
            store.put(key, "m", answer(10), 60)
        assert await store.get("m", "a") is not None  # a is now the most recently used
        store.put("d", "m", answer(10), 60)  # full by count: b (least recently used) goes
        assert await store.get("m", "b") is None
        assert [await store.get("m", k) is not None for k in ("a", "c", "d")] == [True, True, True]
        assert stats["m"].evictions == 1 and store.entries == 3
        store.put("big", "m", answer(3700), 60)  # full by bytes: as many as needed go
        assert store.bytes <= 4096 and await store.get("m", "big") is not None
        assert stats["m"].evictions == 4 and store.entries == 1
        store.put("big", "m", answer(100), 60)  # replacing an entry does not count it twice
        # body, content type, upstream model, overhead
        assert store.entries == 1 and store.bytes == 100 + 16 + 2 + 256

    asyncio.run(scenario())


def test_the_key_covers_account_operation_model_routes_and_the_whole_body() -> None:
    base = cache_key(1, "chat", "m", b"p/u", CHAT)
    assert base == cache_key(1, "chat", "m", b"p/u", {**CHAT, "stream": False, "stream_options": {}})
    assert base == cache_key(1, "chat", "m", b"p/u", dict(reversed(list(CHAT.items()))))
    for other in (
        cache_key(2, "chat", "m", b"p/u", CHAT),
        cache_key(1, "embeddings", "m", b"p/u", CHAT),
        cache_key(1, "chat", "n", b"p/u", CHAT),
        cache_key(1, "chat", "m", b"p/v", CHAT),
        cache_key(1, "chat", "m", b"p/u", {**CHAT, "max_tokens": 5}),
        cache_key(1, "chat", "m", b"p/u", {**CHAT, "user": "someone"}),
    ):
        assert other != base


async def test_admin_flush_all_by_model_and_by_pattern(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    _, url = fake_upstream
    config = cached_config(tmp_path, url)
    config["models"][0]["cache"] = {"ttl_seconds": 60}  # echo-1 too
    gw = await start_gateway(config)
    admin = await gw.admin_headers()
    echo = {"model": "echo-1", "messages": CHAT["messages"], "temperature": 0}

    async def fill() -> None:
        for body in (CHAT, echo):
            assert (await _chat(gw, body)).status_code == 200

    await fill()
    state = (await gw.client.get("/admin/api/cache", headers=admin)).json()
    assert state["store"] == "memory" and state["entries"] == 2
    assert state["models"]["cached-1"]["ttl_seconds"] == 60
    flushed = await gw.client.post("/admin/api/cache/flush", headers=admin, json={"model": "echo-1"})
    assert flushed.status_code == 200 and flushed.json()["flushed"] == 1
    assert flushed.json()["models"] == ["echo-1"]
    assert (await _chat(gw, echo)).headers["x-gateway-cache"] == "miss"
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "hit"
    by_pattern = await gw.client.post("/admin/api/cache/flush", headers=admin, json={"pattern": "cached-*"})
    assert by_pattern.json()["flushed"] == 1 and by_pattern.json()["models"] == ["cached-1"]
    await fill()
    everything = await gw.client.post("/admin/api/cache/flush", headers=admin)
    assert everything.json()["flushed"] == 2
    again = await gw.client.post("/admin/api/cache/flush", headers=admin)
    assert again.json()["flushed"] == 0  # idempotent
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "miss"
    unknown = await gw.client.post("/admin/api/cache/flush", headers=admin, json={"model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_cached"
    both = await gw.client.post("/admin/api/cache/flush", headers=admin, json={"model": "a", "pattern": "b"})
    assert both.status_code == 400
    gw.client.cookies.clear()  # the login's session cookie
    anonymous = await gw.client.post("/admin/api/cache/flush", json={})
    assert anonymous.status_code == 401


async def test_admin_warm_replays_requests_with_the_given_key(cached) -> None:
    gw, upstream = cached
    admin = await gw.admin_headers()
    requests = [
        CHAT,
        EMBED,
        {**CHAT, "temperature": 1},  # sampling: not cacheable on this model
        {"model": "no-such-model", "messages": CHAT["messages"]},
    ]
    warm = await gw.client.post(
        "/admin/api/cache/warm", headers=admin, json={"key": SEED_KEY, "requests": requests}
    )
    assert warm.status_code == 200, warm.text
    report = warm.json()
    assert SEED_KEY not in warm.text
    assert {k: report[k] for k in ("requests", "stored", "hit", "bypass", "failed", "skipped")} == {
        "requests": 4,
        "stored": 2,
        "hit": 0,
        "bypass": 1,
        "failed": 1,
        "skipped": 0,
    }
    assert report["failures"][0]["line"] == 4 and report["failures"][0]["status"] == 404
    assert (await _chat(gw, CHAT)).headers["x-gateway-cache"] == "hit"
    again = await gw.client.post(
        "/admin/api/cache/warm", headers=admin, json={"key": SEED_KEY, "requests": requests[:2]}
    )
    assert again.json()["hit"] == 2 and again.json()["stored"] == 0
    assert upstream.requests == 3
    bad_key = await gw.client.post(
        "/admin/api/cache/warm", headers=admin, json={"key": "gwk_nope.nope", "requests": [CHAT]}
    )
    assert bad_key.json()["failed"] == 1 and bad_key.json()["failures"][0]["status"] == 401
    empty = await gw.client.post(
        "/admin/api/cache/warm", headers=admin, json={"key": SEED_KEY, "requests": []}
    )
    assert empty.status_code == 400
