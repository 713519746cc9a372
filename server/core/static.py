"""The PWA's files as a browser should get them: pre-compressed and cached by what they are.

`npm run build` writes `name.br` and `name.gz` beside every compressible file in pwa/dist
(pwa/scripts/compress.mjs), so serving a compressed asset costs a file open, not a compression
per request. Vite names everything under `assets/` by its content hash, so those never change
and are `immutable` for a year; the shell (`index.html`), `sw.js` and the manifest must be
revalidated on every visit (`no-cache`) or an update would never reach an installed app.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import PurePosixPath

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

# Encodings in the order we prefer them, with the suffix the build writes.
ENCODINGS: tuple[tuple[str, str], ...] = (("br", ".br"), ("gzip", ".gz"))
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Icons and the like: not hashed, rarely changed; a day is a fair trade.
DEFAULT = "public, max-age=86400"


def cache_control(relative_path: str) -> str:
    """Cache-Control for a file of pwa/dist, by where it sits and what it is."""
    path = PurePosixPath(relative_path)
    if path.parts and path.parts[0] == "assets":
        return IMMUTABLE
    if path.suffix in {".html", ".webmanifest"} or path.name in {"sw.js", "registerSW.js"}:
        return REVALIDATE
    return DEFAULT


def accepted_encodings(header: str) -> set[str]:
    """The content codings an Accept-Encoding header allows (q=0 excluded)."""
    accepted: set[str] = set()
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        accepted.add(name)
    return accepted


class PwaFiles(StaticFiles):
    """StaticFiles that picks a pre-compressed sibling and sets Cache-Control per file."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        request_headers = Headers(scope=scope)
        original = os.fspath(full_path)
        relative = os.path.relpath(original, os.fspath(self.directory or "."))
        headers = {"Cache-Control": cache_control(relative.replace(os.sep, "/"))}
        served, served_stat = original, stat_result
        accepted = accepted_encodings(request_headers.get("accept-encoding", ""))
        for coding, suffix in ENCODINGS:
            if coding not in accepted:
                continue
            try:
                candidate_stat = os.stat(original + suffix)
            except OSError:
                continue
            served, served_stat = original + suffix, candidate_stat
            headers["Content-Encoding"] = coding
            break
        if os.path.exists(original + ENCODINGS[0][1]) or os.path.exists(original + ENCODINGS[1][1]):
            headers["Vary"] = "Accept-Encoding"
        response = FileResponse(
            served,
            status_code=status_code,
            stat_result=served_stat,
            headers=headers,
            # The type of what was asked for, not of the .br/.gz file that carries it.
            media_type=mimetypes.guess_type(original)[0] or "text/plain",
        )
        if status_code == 200 and self.is_not_modified(response.headers, request_headers):
            return NotModifiedResponse(response.headers)
        return response
