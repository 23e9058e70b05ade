"""The tool service over HTTP: real sandbox, real BM25 index, real Redis cache; only the web is faked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from arpo.localredis import LocalRedis, free_port
from arpo.proto.tools import ToolCall
from arpo.services.http import ServiceError
from arpo.services.tools.app import create_app
from arpo.services.tools.client import ToolsClient
from arpo.services.tools.sandbox import Sandbox
from arpo.services.tools.search import Searcher, SearXNG, build_index, cache_key
from arpo.services.tools.settings import ToolsSettings

pytestmark = pytest.mark.anyio  # async tests and fixtures through anyio's pytest plugin

DOCS = [
    {"id": "a", "title": "Aldoria", "text": "The capital of Aldoria is Venmark, founded in 1412."},
    {"id": "b", "title": "Brell", "text": "Brell is a river that crosses the plains of Tosk."},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("index")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_index(corpus, tmp / "index")
    return tmp / "index"


def web(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"results": [{"url": "https://w/1", "title": "Web", "content": "web hit"}]}
    )


@pytest.fixture
async def client(index_dir: Path, redis_server: LocalRedis) -> AsyncIterator[ToolsClient]:
    settings = ToolsSettings(
        max_concurrency=2, max_queue=1, index=str(index_dir), timeout_s=3, max_timeout_s=5
    )
    from arpo.services.tools.search import LocalIndex

    searcher = Searcher(
        {
            "local": LocalIndex(index_dir),
            "searxng": SearXNG("http://searx.local", 5, 100, httpx.MockTransport(web)),
        },
        "local",
        settings.snippet_chars,
        cache=Redis.from_url(redis_server.url),
        cache_ttl_s=60,
    )
    app = create_app(Sandbox(settings), searcher, settings)
    async with app.router.lifespan_context(app), ToolsClient.in_process(app, timeout_s=30) as c:
        yield c


async def test_python_call_and_errors_are_results(client: ToolsClient) -> None:
    ok = await client.python("sum(range(10))")
    assert ok.ok and ok.output == "45\n" and ok.isolation == "namespaces"
    failed = await client.python("raise ValueError('nope')")
    assert not failed.ok and failed.error == "ValueError: nope" and failed.exit_code == 1
    slow = await client.python("import time\ntime.sleep(30)", timeout_s=0.5)
    assert slow.timed_out and slow.error == "TimeoutError after 0.5s"


async def test_search_local_web_and_cache(client: ToolsClient, redis_server: LocalRedis) -> None:
    query = f"capital of Aldoria {time.time_ns()}"  # unique, so the first lookup is a miss
    first = await client.search(query, k=2)
    assert first.result.ok and first.hits[0].doc_id == "a" and not first.cached
    assert first.result.output.startswith("Page 1: Aldoria\nThe capital of Aldoria is Venmark")
    again = await client.search("  " + query.upper() + " ", k=2)  # normalized: same cache entry
    assert again.cached and again.hits == first.hits
    assert redis.Redis.from_url(redis_server.url).ttl(cache_key("local", query, 2)) > 0
    webbed = await client.search(f"anything {time.time_ns()}", backend="searxng")
    assert webbed.hits[0].url == "https://w/1"
    metrics = (await client._send("GET", "/metrics", None)).text
    assert 'arpo_tools_search_cache_total{result="hit"}' in metrics
    assert 'arpo_tools_calls_total{outcome="ok",tool="search"}' in metrics


async def test_batch_runs_mixed_calls_in_order(client: ToolsClient) -> None:
    calls = [
        ToolCall(tool="python", content="print('p1')"),
        ToolCall(tool="search", content="river Tosk"),
        ToolCall(tool="python", content="   "),
        ToolCall(tool="python", content="1/0"),
    ]
    results = await client.batch(calls)
    assert results[0].output == "p1\n"
    assert "Page 1: Brell" in results[1].output
    assert not results[2].ok and results[2].error == "empty python call"
    assert results[3].error == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/python", {"code": ""}, "code"),
        ("/v1/python", {"code": "   "}, None),
        ("/v1/python", {"code": "x" * 20_001}, "code"),
        ("/v1/python", {"code": "1", "timeout_s": 6}, "timeout_s"),
        ("/v1/python", {"code": "1", "timeout_s": -1}, "timeout_s"),
        ("/v1/python", {"code": "1", "extra": 1}, "extra"),
        ("/v1/search", {"query": "q", "k": 0}, "k"),
        ("/v1/search", {"query": ""}, "query"),
        ("/v1/search", {"query": "q", "backend": "bing"}, "backend"),
        ("/v1/batch", {"calls": []}, "calls"),
        ("/v1/batch", {"calls": [{"tool": "shell", "content": "ls"}]}, "tool"),
        ("/v1/batch", {"calls": [{"tool": "python", "content": "1"}] * 257}, "calls"),
        ("/v1/batch", {"calls": [{"tool": "python", "content": "1", "timeout_s": 9}]}, "timeout_s"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: ToolsClient, path: str, body: dict[str, object], field: str | None
) -> None:
    with pytest.raises(ServiceError) as err:
        await client._send("POST", path, json.dumps(body))
    assert err.value.status_code == 422
    if field is not None:
        assert any(field in [str(p) for p in e["loc"]] for e in err.value.detail), err.value.detail


async def test_saturation_is_429_with_retry_after(client: ToolsClient) -> None:
    slow = "import time\ntime.sleep(1.5)\nprint('done')"
    http = client._http
    responses = await asyncio.gather(*(http.post("/v1/python", json={"code": slow}) for _ in range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 429, 429]  # 2 slots + 1 queued admitted
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert (await client.python("1 + 1")).output == "2\n"  # and it recovers


async def test_health(client: ToolsClient) -> None:
    health = await client.health()
    assert health["isolation"] == "namespaces" and health["index_loaded"] and health["index_documents"] == 2
    assert health["search_backends"] == ["local", "searxng"]


@pytest.fixture
def served(index_dir: Path, redis_server: LocalRedis) -> Iterator[str]:
    """`python -m arpo.services.tools` as its own process, configured by environment variables."""
    port = free_port()
    env = {
        **os.environ,
        "ARPO_TOOLS_PORT": str(port),
        "ARPO_TOOLS_INDEX": str(index_dir),
        "REDIS_URL": redis_server.url,
    }
    proc = subprocess.Popen([sys.executable, "-m", "arpo.services.tools"], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_the_service_entry_point_over_http(served: str) -> None:
    async with ToolsClient(served, timeout_s=30) as client:
        assert (await client.python("print(6 * 7)")).output == "42\n"
        assert (await client.search("Venmark")).hits[0].doc_id == "a"


def test_entry_point_refuses_bad_settings() -> None:
    env = {**os.environ, "ARPO_TOOLS_MAX_CONCURRENCY": "0", "ARPO_TOOLS_SEARCH_BACKEND": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "arpo.services.tools"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "ARPO_TOOLS_MAX_CONCURRENCY" in done.stderr
    env = {**os.environ, "ARPO_TOOLS_SEARCH_BACKEND": "brave"}
    env.pop("BRAVE_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "arpo.services.tools"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "search backend 'brave' is not configured" in done.stderr
