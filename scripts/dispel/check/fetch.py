"""Fetch files over HTTP for the online checks: bounded concurrency, a cache, retries with backoff, a deadline."""
from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

GRACE = 1.0  # seconds past the deadline to collect answers of requests that stopped at it
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "dispel-check (+https://github.com)"


@dataclass(frozen=True)
class Fetched:
    url: str
    data: bytes | None  # None: not fetched (see status and error)
    status: int = 0  # the last HTTP status; 0 when no answer came
    error: str = ""

    @property
    def unreachable(self) -> bool:
        """No HTTP answer at all: the host could not be reached (or the time ran out)."""
        return self.data is None and self.status == 0


class Fetcher:
    """GET many URLs at once. Answers are cached in memory for the run and, with ``cache_dir``,
    on disk: callers only fetch immutable URLs (a file at a pinned commit), so a cached answer
    never goes stale. Only 200s are cached."""

    def __init__(
        self,
        workers: int = 8,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 15.0,
        total: float = 60.0,
        cache_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.workers, self.retries, self.backoff = workers, retries, backoff
        self.timeout, self.total, self.cache_dir, self.sleep = timeout, total, cache_dir, sleep
        self.memory: dict[str, Fetched] = {}
        self.requests = 0  # HTTP requests made (tests count retries with it)

    def _cache_path(self, url: str) -> Path | None:
        return self.cache_dir / hashlib.sha256(url.encode()).hexdigest() if self.cache_dir else None

    def _get(self, url: str, deadline: float) -> Fetched:
        cached = self._cache_path(url)
        if cached is not None and cached.is_file():
            return Fetched(url, cached.read_bytes(), 200)
        result = Fetched(url, None, 0, "not tried")
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                return Fetched(url, None, result.status, f"time limit reached ({result.error})")
            result = self._once(url, min(self.timeout, left))
            if result.data is not None or (result.status and result.status not in RETRY_STATUS):
                break
            if attempt < self.retries:
                # Exponential backoff, but never sleep past the deadline.
                self.sleep(max(0.0, min(self.backoff * 2**attempt, deadline - time.monotonic())))
        if result.data is not None and cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(result.data)
            tmp.replace(cached)
        return result

    def _once(self, url: str, timeout: float) -> Fetched:
        self.requests += 1
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Fetched(url, resp.read(), resp.status)
        except urllib.error.HTTPError as exc:
            return Fetched(url, None, exc.code, f"HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Fetched(url, None, 0, reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}")
        except (http.client.HTTPException, ValueError) as exc:  # a cut-off answer, a malformed URL
            return Fetched(url, None, 0, f"{type(exc).__name__}: {exc}")

    def get_all(self, urls: Iterable[str]) -> dict[str, Fetched]:
        """Every URL's answer, within ``total`` seconds for all; the late ones say so."""
        deadline = time.monotonic() + self.total
        todo = [u for u in dict.fromkeys(urls) if u not in self.memory]
        pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="dispel-fetch")
        futures = {pool.submit(self._get, u, deadline): u for u in todo}
        pending = set(futures)
        while pending:
            # Requests and backoff sleeps stop themselves at the deadline; the grace collects their answers.
            left = deadline + GRACE - time.monotonic()
            done, pending = wait(pending, timeout=max(0.0, left), return_when=FIRST_COMPLETED)
            if not done:
                break
            for f in done:
                self.memory[futures[f]] = f.result()
        # A request still hanging ends by its own socket timeout (never past the deadline); don't wait.
        pool.shutdown(wait=False, cancel_futures=True)
        for f in pending:
            self.memory[futures[f]] = Fetched(futures[f], None, 0, f"time limit of {self.total:g}s reached")
        return {u: self.memory[u] for u in dict.fromkeys(urls)}
