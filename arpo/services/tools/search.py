"""Search for the `<search>` tool: a local BM25 index and web search APIs behind one interface.

- `local`: a BM25 index (the `bm25s` library) over a JSONL corpus of `{"id", "title", "text"}`, built
  by `arpo index build CORPUS OUT` and loaded by the service.
- `brave`, `serper`, `searxng`: web search over HTTP (httpx), API keys from the environment
  (`BRAVE_API_KEY`, `SERPER_API_KEY`; SearXNG needs only its URL). Each has a timeout, retries with
  exponential backoff on connection errors, 429 and 5xx, and a token-bucket rate limit.

Failures are results the model sees (`ToolResult.ok = false`), never exceptions out of `Searcher.search`.
Hits are shown as numbered pages, each cut to `snippet_chars`: `Page 1: title\\ntext`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arpo.builtins import resolve_index
from arpo.jsonl import read_jsonl
from arpo.proto import keys
from arpo.proto.tools import SearchHit, SearchResponse, ToolResult
from arpo.services.tools.settings import ToolsSettings

log = logging.getLogger(__name__)

INDEX_MANIFEST = "arpo-index.json"
INDEX_FORMAT = 1


class SearchError(RuntimeError):
    """A backend could not answer (after its retries)."""


class CorpusError(ValueError):
    """A corpus line is not a valid document; the message names the line and the field."""


class Backend(Protocol):
    """One search backend."""

    name: str

    async def search(self, query: str, k: int) -> list[SearchHit]: ...


def read_corpus(path: Path) -> Iterator[dict[str, str]]:
    """Documents of a JSONL corpus, checked: `id` (unique, non-empty), `title`, `text` strings."""
    seen: set[str] = set()
    for number, doc in read_jsonl(path, CorpusError):
        if not isinstance(doc, dict):
            raise CorpusError(f"{path}:{number}: expected an object with id, title, text")
        for field in ("id", "title", "text"):
            if not isinstance(doc.get(field), str):
                raise CorpusError(f"{path}:{number}: field {field!r} must be a string")
        if not doc["id"] or doc["id"] in seen:
            raise CorpusError(f"{path}:{number}: field 'id' is empty or repeated: {doc['id']!r}")
        seen.add(doc["id"])
        yield {"id": doc["id"], "title": doc["title"], "text": doc["text"]}


def _tokenize(texts: list[str], progress: bool) -> Any:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=progress)


def build_index(corpus: Path, out: Path, progress: Callable[[int], None] | None = None) -> int:
    """Index `corpus` into the directory `out`; returns the number of documents."""
    import bm25s

    docs = []
    for doc in read_corpus(corpus):
        docs.append(doc)
        if progress is not None and len(docs) % 1000 == 0:
            progress(len(docs))
    if not docs:
        raise CorpusError(f"{corpus}: no documents")
    tokens = _tokenize([f"{d['title']} {d['text']}" for d in docs], progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    retriever.save(str(out), corpus=docs, show_progress=False)
    manifest = {"format": INDEX_FORMAT, "documents": len(docs), "corpus": str(corpus)}
    (out / INDEX_MANIFEST).write_text(json.dumps(manifest))
    if progress is not None:
        progress(len(docs))
    return len(docs)


class LocalIndex:
    """A BM25 index built by `build_index`, searched in memory."""

    name = "local"

    def __init__(self, path: Path) -> None:
        import bm25s

        manifest_path = path / INDEX_MANIFEST
        if not manifest_path.is_file():
            raise SearchError(f"{path} is not an index built by `arpo index build` (no {INDEX_MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != INDEX_FORMAT:
            raise SearchError(f"{path}: index format {manifest.get('format')}, expected {INDEX_FORMAT}")
        self.retriever = bm25s.BM25.load(str(path), load_corpus=True, show_progress=False)
        self.documents = int(manifest["documents"])

    async def search(self, query: str, k: int) -> list[SearchHit]:
        # In a worker thread: ~7 ms per query over 100k documents would otherwise stall the event loop.
        return await asyncio.to_thread(self.search_sync, query, k)

    def search_sync(self, query: str, k: int) -> list[SearchHit]:
        tokens = _tokenize([query], progress=False)
        if not tokens.vocab:  # only stopwords or punctuation: nothing can match
            return []
        query_terms = [[term for term in tokens.vocab if term in self.retriever.vocab_dict]]
        if not query_terms[0]:
            return []
        docs, scores = self.retriever.retrieve(
            query_terms, k=min(k, self.documents), show_progress=False, n_threads=1
        )
        return [
            SearchHit(doc_id=d["id"], title=d["title"], text=d["text"], score=float(s))
            for d, s in zip(docs[0], scores[0], strict=True)
            if s > 0
        ]


class RateLimiter:
    """A token bucket: at most `rate` acquisitions per second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._last = time.monotonic()
                self._tokens = 1.0
            self._tokens -= 1


class WebBackend:
    """Shared by the web APIs: one httpx client, rate limit, retries; subclasses build and parse."""

    name = "web"
    retries = 3
    backoff_s = 0.5
    api_key_env: str | None = None
    """The environment variable holding the API key, for APIs that need one."""

    def __init__(
        self, timeout_s: float, rate: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._api_key = _key(self.api_key_env) if self.api_key_env else ""
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._limit = RateLimiter(rate)

    def request(self, query: str, k: int) -> httpx.Request:
        raise NotImplementedError

    def parse(self, body: Any) -> list[SearchHit]:
        raise NotImplementedError

    async def search(self, query: str, k: int) -> list[SearchHit]:
        for attempt in range(self.retries + 1):
            await self._limit.acquire()
            try:
                response = await self._http.send(self.request(query, k))
            except httpx.TransportError as err:
                failure = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    try:
                        return self.parse(response.json())[:k]
                    except (ValueError, KeyError, TypeError) as err:
                        raise SearchError(f"{self.name}: unexpected response ({err})") from None
                failure = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    raise SearchError(f"{self.name}: {failure}: {response.text[:200]}")
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        raise SearchError(f"{self.name}: {failure} (after {self.retries + 1} attempts)")

    async def close(self) -> None:
        await self._http.aclose()


def _key(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise SearchError(f"{variable} is not set")
    return value


class Brave(WebBackend):
    """Brave Search API (`BRAVE_API_KEY`)."""

    name = "brave"
    url = "https://api.search.brave.com/res/v1/web/search"

    api_key_env = "BRAVE_API_KEY"

    def request(self, query: str, k: int) -> httpx.Request:
        headers = {"X-Subscription-Token": self._api_key, "Accept": "application/json"}
        return self._http.build_request("GET", self.url, params={"q": query, "count": k}, headers=headers)

    def parse(self, body: Any) -> list[SearchHit]:
        results = body.get("web", {}).get("results", [])
        return [
            _web_hit(r["url"], r.get("title", ""), r.get("description", ""), i) for i, r in enumerate(results)
        ]


class Serper(WebBackend):
    """Serper (Google results) API (`SERPER_API_KEY`)."""

    name = "serper"
    url = "https://google.serper.dev/search"

    api_key_env = "SERPER_API_KEY"

    def request(self, query: str, k: int) -> httpx.Request:
        headers = {"X-API-KEY": self._api_key}
        return self._http.build_request("POST", self.url, json={"q": query, "num": k}, headers=headers)

    def parse(self, body: Any) -> list[SearchHit]:
        results = body.get("organic", [])
        return [
            _web_hit(r["link"], r.get("title", ""), r.get("snippet", ""), i) for i, r in enumerate(results)
        ]


class SearXNG(WebBackend):
    """A SearXNG instance's JSON API (its `search.formats` must include json)."""

    name = "searxng"

    def __init__(
        self, base_url: str, timeout_s: float, rate: float, transport: httpx.AsyncBaseTransport | None = None
    ):
        super().__init__(timeout_s, rate, transport)
        self.url = base_url.rstrip("/") + "/search"

    def request(self, query: str, k: int) -> httpx.Request:
        return self._http.build_request("GET", self.url, params={"q": query, "format": "json"})

    def parse(self, body: Any) -> list[SearchHit]:
        results = body.get("results", [])
        return [
            _web_hit(r["url"], r.get("title", ""), r.get("content", ""), i) for i, r in enumerate(results)
        ]


def _web_hit(url: str, title: str, text: str, rank: int) -> SearchHit:
    """Web APIs return ranks, not scores: score = 1 / (1 + rank)."""
    return SearchHit(doc_id=url, title=title, text=text, score=1.0 / (1 + rank), url=url)


def snippet(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a word boundary when one is near, marked with '...'."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = len(cut) if text[len(cut)] == " " else cut.rfind(" ")  # end on a whole word
    return (cut[:space] if space > limit // 2 else cut) + "..."


def format_pages(hits: list[SearchHit], limit: int) -> str:
    """The text the model sees: `Page i: title` and the snippet, one block per hit."""
    if not hits:
        return "No results found."
    return "\n\n".join(f"Page {i}: {h.title}\n{snippet(h.text, limit)}" for i, h in enumerate(hits, 1))


def search_result(hits: list[SearchHit], limit: int, started: float) -> ToolResult:
    duration_ms = (time.perf_counter() - started) * 1000
    return ToolResult(ok=True, output=format_pages(hits, limit), duration_ms=duration_ms)


def cache_key(backend: str, query: str, k: int) -> str:
    """Redis key of a cached search: backend, k and the normalized query (case and spacing ignored)."""
    normalized = " ".join(query.lower().split())
    return keys.search_cache(backend, hashlib.sha256(f"{k}\n{normalized}".encode()).hexdigest())


class Searcher:
    """Searches a named backend through the Redis result cache; every failure becomes an error result."""

    def __init__(
        self,
        backends: dict[str, Backend],
        default: str,
        snippet_chars: int,
        cache: Redis | None = None,
        cache_ttl_s: int = 0,
        on_cache: Callable[[bool], None] = lambda hit: None,
    ) -> None:
        if default not in backends:
            raise SearchError(f"search backend {default!r} is not configured (have: {sorted(backends)})")
        self.backends, self.default = backends, default
        self._snippet = snippet_chars
        self._cache = cache if cache_ttl_s > 0 else None
        self._ttl = cache_ttl_s
        self.on_cache = on_cache
        """Called with True on a cache hit, False on a miss (the service counts them)."""

    async def search(self, query: str, k: int, backend: str | None = None) -> SearchResponse:
        name = backend or self.default
        started = time.perf_counter()
        key = cache_key(name, query, k)
        cached = await self._cached(key)
        if cached is not None:
            return SearchResponse(
                hits=cached, result=search_result(cached, self._snippet, started), cached=True
            )
        try:
            hits = await self.backends[name].search(query, k)
        except SearchError as err:
            error = ToolResult(ok=False, output="", error=f"SearchError: {err}")
            return SearchResponse(hits=[], result=error)
        await self._store(key, hits)
        return SearchResponse(hits=hits, result=search_result(hits, self._snippet, started))

    async def _cached(self, key: str) -> list[SearchHit] | None:
        if self._cache is None:
            return None
        try:
            raw = await self._cache.get(key)
        except RedisError as err:
            log.warning("search cache unavailable: %s", err)
            return None
        self.on_cache(raw is not None)
        return None if raw is None else [SearchHit.model_validate(h) for h in json.loads(raw)]

    async def _store(self, key: str, hits: list[SearchHit]) -> None:
        if self._cache is None:
            return
        try:
            await self._cache.set(key, json.dumps([h.model_dump() for h in hits]), ex=self._ttl)
        except RedisError as err:
            log.warning("search cache unavailable: %s", err)

    async def close(self) -> None:
        for backend in self.backends.values():
            if isinstance(backend, WebBackend):
                await backend.close()


def configured_backends(
    settings: ToolsSettings, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Backend]:
    """The backends these settings and the environment make available."""
    backends: dict[str, Backend] = {}
    if settings.index is not None:
        backends["local"] = LocalIndex(Path(resolve_index(settings.index)))
    timeout, rate = settings.search_timeout_s, settings.search_rps
    if os.environ.get("BRAVE_API_KEY"):
        backends["brave"] = Brave(timeout, rate, transport)
    if os.environ.get("SERPER_API_KEY"):
        backends["serper"] = Serper(timeout, rate, transport)
    if settings.searxng_url:
        backends["searxng"] = SearXNG(settings.searxng_url, timeout, rate, transport)
    return backends
