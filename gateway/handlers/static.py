"""The ``static`` handler: files under a root, hot ones answered from memory.

Cached files get full HTTP semantics here (validators, conditionals, single and
multiple ranges, precompressed or on-the-fly compressed variants with ``Vary``);
files too large to cache go to aiohttp's ``FileResponse`` (sendfile, conditionals,
single ranges, sidecar .br/.gz files).
"""

from __future__ import annotations

import asyncio
import fnmatch
import gzip
import html
import os
import re
from collections.abc import Callable
from email.utils import formatdate
from typing import cast
from urllib.parse import quote

import aiohttp
import cramjam
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from gateway.config import Static
from gateway.request.errors import HTTPError
from gateway.static.cache import Entry, FileCache, Located, Root
from gateway.static.http import (
    accepted_encodings,
    compressible,
    conditional_status,
    parse_ranges,
    pick_encoding,
    range_applies,
)
from gateway.static.paths import relative_segments

PREFERENCE = ("br", "zstd", "gzip")
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=6, mtime=0),
    "br": lambda data: bytes(cramjam.brotli.compress(data)),
    "zstd": lambda data: bytes(cramjam.zstd.compress(data)),
}


class StaticHandler:
    """Serves ``config.root`` below the route's path prefix."""

    def __init__(self, config: Static, prefix: str, report: Callable[[str, int], None]) -> None:
        self.config = config
        self._prefix = prefix
        self._root = Root(config.root, follow_outside=config.follow_symlinks_outside)
        cache = config.cache
        self.cache = FileCache(
            self._root,
            max_bytes=cache.max_bytes,
            max_file_bytes=cache.max_file_bytes,
            check_interval=cache.check_interval,
            report=report,
        )
        self._rules = tuple((rule.glob, rule.value) for rule in config.cache_control)

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET or HEAD", {"Allow": "GET, HEAD"})
        config = self.config
        segments = relative_segments(
            request.raw_path, self._prefix, allow_hidden=config.allow_hidden
        )
        found = await self.cache.lookup(segments)
        if isinstance(found, Located) and found.kind == "dir":
            path = request.raw_path.split("?", 1)[0]
            if not path.endswith("/"):
                query = request.raw_path[len(path) :]
                raise HTTPError(308, "directory", {"Location": path + "/" + query})
            for index in config.index:
                found = await self.cache.lookup((*segments, index))
                if not (isinstance(found, Located) and found.kind != "file"):
                    break
            else:
                if config.listing:
                    return await self._listing(segments)
                found = Located("missing")
        if isinstance(found, Located) and found.kind == "missing" and config.spa_fallback:
            found = await self.cache.lookup(tuple(config.spa_fallback.strip("/").split("/")))
        if isinstance(found, Entry):
            return await self._from_memory(request, found)
        if found.kind == "file":
            return _FromDisk(found.path, headers=self._cache_control(found.path))
        raise HTTPError(404, "not found")

    def _cache_control(self, path: str) -> dict[str, str]:
        name = os.path.basename(path)
        for pattern, value in self._rules:
            if fnmatch.fnmatchcase(name, pattern):
                return {"Cache-Control": value}
        return {}

    async def _from_memory(self, request: web.BaseRequest, entry: Entry) -> web.StreamResponse:
        varies = bool(entry.variants) or self._compresses(entry)
        coding = None
        body = entry.data
        if varies:
            accepted = accepted_encodings(request.headers.get("Accept-Encoding"))
            coding = pick_encoding(PREFERENCE, accepted)
            if coding is not None:
                variant = entry.variants.get(coding)
                if variant is None and self._compresses(entry):
                    variant = await self._compress(entry, coding)
                if variant is None:
                    coding = None
                else:
                    body = variant
        # Hot path: headers are built once per file and coding, then reused.
        headers = entry.headers.get(coding)
        if headers is None:
            headers = entry.headers[coding] = self._headers(entry, coding, varies)
        etag = headers["ETag"][1:-1]
        status = conditional_status(request, etag, entry.mtime)
        if status == 304:
            kept = ("ETag", "Last-Modified", "Cache-Control", "Vary")
            return web.Response(status=304, headers={k: headers[k] for k in kept if k in headers})
        if status == 412:
            raise HTTPError(412, "precondition failed")
        if "Range" in request.headers and range_applies(request, etag, entry.mtime):
            headers = dict(headers)
            ranges = parse_ranges(request.headers["Range"], len(body))
            if ranges == []:
                headers["Content-Range"] = f"bytes */{len(body)}"
                del headers["Content-Type"]
                raise HTTPError(416, "range not satisfiable", headers)
            if ranges is not None:
                return await self._partial(body, ranges, headers)
        return web.Response(body=body, headers=headers)

    def _headers(self, entry: Entry, coding: str | None, varies: bool) -> dict[str, str]:
        headers = {
            "Content-Type": entry.content_type,
            "ETag": f'"{entry.etag}{f"-{coding}" if coding else ""}"',
            "Last-Modified": formatdate(entry.mtime, usegmt=True),
            "Accept-Ranges": "bytes",
            **self._cache_control(entry.path),
        }
        if varies:
            headers["Vary"] = "Accept-Encoding"
        if coding is not None:
            headers["Content-Encoding"] = coding
        return headers

    async def _partial(
        self, body: bytes, ranges: list[tuple[int, int]], headers: dict[str, str]
    ) -> web.Response:
        size = len(body)
        if len(ranges) == 1:
            start, end = ranges[0]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return web.Response(status=206, body=body[start : end + 1], headers=headers)
        # RFC 9110 §14.6: several ranges go as multipart/byteranges, one part each.
        writer = aiohttp.MultipartWriter("byteranges")
        for start, end in ranges:
            writer.append(
                body[start : end + 1],
                {
                    "Content-Type": headers["Content-Type"],
                    "Content-Range": f"bytes {start}-{end}/{size}",
                },
            )
        sink = _Buffer()
        await writer.write(cast(AbstractStreamWriter, sink))  # only write() is used
        del headers["Content-Type"]
        headers["Content-Type"] = writer.headers["Content-Type"]
        return web.Response(status=206, body=bytes(sink.data), headers=headers)

    def _compresses(self, entry: Entry) -> bool:
        config = self.config
        return (
            config.compress
            and entry.size >= config.compress_min_bytes
            and compressible(entry.content_type)
        )

    async def _compress(self, entry: Entry, coding: str) -> bytes | None:
        compressor = COMPRESSORS.get(coding)
        if compressor is None:
            return None
        loop = asyncio.get_running_loop()
        variant = await loop.run_in_executor(None, compressor, entry.data)
        if coding not in entry.variants:
            entry.variants[coding] = variant
            self.cache.grew(entry, len(variant))
        return entry.variants[coding]

    async def _listing(self, segments: tuple[str, ...]) -> web.Response:
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(None, self._names, segments)
        title = html.escape("/" + "/".join(segments) + "/")
        # "./" and percent-encoding: a file named "javascript:..." stays a relative link.
        rows = "".join(
            f'<li><a href="./{html.escape(quote(n))}">{html.escape(n)}</a></li>' for n in names
        )
        page = f"<!doctype html><title>{title}</title><h1>{title}</h1><ul>{rows}</ul>\n"
        return web.Response(text=page, content_type="text/html")

    def _names(self, segments: tuple[str, ...]) -> list[str]:
        located = self._root.locate(segments)
        if located.kind != "dir":
            return []
        with os.scandir(located.path) as entries:
            names = [
                e.name + ("/" if e.is_dir() else "")
                for e in entries
                if self.config.allow_hidden or not e.name.startswith(".")
            ]
        return sorted(names)


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


# The one Range aiohttp's FileResponse takes: a single byte range.
_ONE_RANGE = re.compile(r"bytes=\d*-\d*")


class _FromDisk(web.FileResponse):
    """aiohttp's FileResponse, which takes one byte range and answers 416 to any other
    Range; here a Range it cannot take (several ranges, another unit) is ignored, as
    RFC 9110 §14.2 allows: the whole file, 200."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        header = request.headers.get("Range")
        if header is not None and not _ONE_RANGE.fullmatch(header.strip()):
            headers = CIMultiDict(request.headers)
            del headers["Range"]
            request = request.clone(headers=headers)
        return await super().prepare(request)
