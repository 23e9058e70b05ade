"""Search: corpus checks, the BM25 index, formatting, and the web backends against a fake internet."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from arpo.proto.tools import SearchHit
from arpo.services.tools.search import (
    Brave,
    CorpusError,
    LocalIndex,
    RateLimiter,
    Searcher,
    SearchError,
    SearXNG,
    Serper,
    WebBackend,
    build_index,
    format_pages,
    snippet,
)

DOCS = [
    {"id": "paris", "title": "Paris", "text": "Paris is the capital of France, founded in antiquity."},
    {"id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany since 1990."},
    {"id": "ostrava", "title": "Ostrava", "text": "Ostrava is an industrial city in Moravia."},
]


def write_corpus(path: Path, docs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture
def index(tmp_path: Path) -> LocalIndex:
    build_index(write_corpus(tmp_path / "c.jsonl", DOCS), tmp_path / "index")
    return LocalIndex(tmp_path / "index")


def test_local_index_ranks_the_matching_document_first(index: LocalIndex) -> None:
    hits = index.search_sync("capital of Germany", 2)
    assert [h.doc_id for h in hits] == ["berlin", "paris"]
    assert hits[0].score > hits[1].score > 0
    assert index.search_sync("Moravia industrial", 5)[0].title == "Ostrava"
    assert index.search_sync("the of is", 5) == []  # stopwords only
    assert index.search_sync("zanzibar", 5) == []  # no known term
    assert index.documents == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "1: not JSON"),
        ('["a"]', "expected an object"),
        ('{"id": "a", "title": "t"}', "field 'text' must be a string"),
        ('{"id": "", "title": "t", "text": "x"}', "field 'id' is empty or repeated"),
    ],
)
def test_corpus_errors_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(line + "\n")
    with pytest.raises(CorpusError, match=message):
        build_index(corpus, tmp_path / "out")


def test_repeated_ids_and_empty_corpus_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="2: field 'id' is empty or repeated"):
        build_index(write_corpus(tmp_path / "c.jsonl", [DOCS[0], DOCS[0]]), tmp_path / "out")
    with pytest.raises(CorpusError, match="no documents"):
        build_index(write_corpus(tmp_path / "e.jsonl", []), tmp_path / "out")
    with pytest.raises(SearchError, match="not an index"):
        LocalIndex(tmp_path)


def test_snippets_and_pages() -> None:
    assert snippet("a  b\n c", 10) == "a b c"
    cut = snippet("word " * 50, 23)
    assert cut == "word word word word..." and len(cut) <= 23
    hits = [SearchHit(doc_id="a", title="A", text="alpha " * 10, score=2.0)]
    assert format_pages(hits, 20) == "Page 1: A\nalpha alpha alpha..."
    assert format_pages([], 20) == "No results found."


Handler = Callable[[httpx.Request], httpx.Response]


def fake_internet(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def test_brave_serper_searxng_requests_and_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAVE_API_KEY", "bk")
    monkeypatch.setenv("SERPER_API_KEY", "sk")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.search.brave.com":
            body = {"web": {"results": [{"url": "https://b/1", "title": "B1", "description": "d1"}]}}
        elif request.url.host == "google.serper.dev":
            body = {"organic": [{"link": "https://s/1", "title": "S1", "snippet": "s1"}] * 3}
        else:
            body = {"results": [{"url": "https://x/1", "title": "X1", "content": "x1"}]}
        return httpx.Response(200, json=body)

    transport = fake_internet(handler)

    async def go() -> None:
        brave = await Brave(5, 100, transport).search("q one", 3)
        assert brave == [SearchHit(doc_id="https://b/1", title="B1", text="d1", score=1.0, url="https://b/1")]
        assert len(await Serper(5, 100, transport).search("q", 2)) == 2
        assert (await SearXNG("http://searx.local/", 5, 100, transport).search("q", 3))[0].title == "X1"

    import asyncio

    asyncio.run(go())
    brave_req, serper_req, searx_req = seen
    assert brave_req.headers["X-Subscription-Token"] == "bk" and brave_req.url.params["q"] == "q one"
    assert serper_req.headers["X-API-KEY"] == "sk" and json.loads(serper_req.content) == {"q": "q", "num": 2}
    assert str(searx_req.url) == "http://searx.local/search?q=q&format=json"


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    with pytest.raises(SearchError, match="BRAVE_API_KEY is not set"):
        Brave(5, 1)


def flaky(statuses: list[int]) -> tuple[httpx.MockTransport, list[int]]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[min(len(calls), len(statuses) - 1)]
        calls.append(status)
        if status == 0:
            raise httpx.ConnectError("no route", request=request)
        return httpx.Response(status, json={"results": [{"url": "u", "title": "t", "content": "c"}]})

    return httpx.MockTransport(handler), calls


def searx(transport: httpx.MockTransport) -> SearXNG:
    backend = SearXNG("http://searx.local", 5, 1000, transport)
    backend.backoff_s = 0.001
    return backend


def test_retries_on_429_5xx_and_connection_errors_then_succeeds() -> None:
    import asyncio

    transport, calls = flaky([429, 503, 0, 200])
    assert asyncio.run(searx(transport).search("q", 1))[0].title == "t"
    assert calls == [429, 503, 0, 200]


def test_gives_up_after_retries_and_does_not_retry_client_errors() -> None:
    import asyncio

    transport, calls = flaky([500])
    with pytest.raises(SearchError, match=r"HTTP 500 \(after 4 attempts\)"):
        asyncio.run(searx(transport).search("q", 1))
    assert len(calls) == WebBackend.retries + 1
    transport, calls = flaky([403])
    with pytest.raises(SearchError, match="HTTP 403"):
        asyncio.run(searx(transport).search("q", 1))
    assert calls == [403]


def test_searcher_turns_failures_into_error_results() -> None:
    import asyncio

    transport, _ = flaky([401])
    searcher = Searcher({"searxng": searx(transport)}, "searxng", 100)
    response = asyncio.run(searcher.search("q", 3))
    assert not response.result.ok and "HTTP 401" in (response.result.error or "") and response.hits == []
    with pytest.raises(SearchError, match="not configured"):
        Searcher({}, "local", 100)


def test_rate_limiter_spaces_requests() -> None:
    import asyncio

    async def three() -> float:
        limiter = RateLimiter(rate=20.0)
        start = time.monotonic()
        for _ in range(3):
            await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(three()) >= 2 / 20 * 0.9  # the first is free, the next two wait 1/20 s each
