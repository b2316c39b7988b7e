"""The Content-Security-Policy of every page, set by one middleware.

The policy allows only this site's own scripts: no inline script, no `eval`, no CDN. What
each looser directive is for:

* `style-src 'unsafe-inline'`: the Monaco editor writes `<style>` elements and `style=""`
  attributes at run time (its themes, the cursor, the minimap), and Swagger UI's page has an
  inline `<style>`; ansi_up colours terminal text and KaTeX places glyphs with `style=""`
  (the output's own HTML and Markdown lose theirs to DOMPurify). Styles cannot run code;
  scripts stay strict.
* `img-src data: blob:`: images produced by code (matplotlib PNGs, SVGs) are shown as
  `data:` URLs; Monaco draws some icons from `data:` URLs.
* `font-src data:`: Monaco's codicon font is inlined as a `data:` URL in its CSS.
* `worker-src 'self' blob:`: Monaco's language services run in web workers loaded from our
  static files; its loader may wrap a worker script in a `blob:` URL.
* `connect-src 'self'`: the websocket of live output (CSP Level 3 lets 'self' match ws: and
  wss: on the same host and port) and the page's own fetches.
* `frame-src 'self'`: HTML produced by code is shown in `<iframe sandbox srcdoc>`; such a
  frame has an opaque origin and, without `allow-scripts`, runs no script at all.
* `frame-ancestors 'none'`: no other site may frame our pages (X-Frame-Options says the same
  to older browsers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

HEADER = "Content-Security-Policy"

DIRECTIVES: dict[str, str] = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: blob:",
    "font-src": "'self' data:",
    "worker-src": "'self' blob:",
    "connect-src": "'self'",
    "frame-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

POLICY = "; ".join(f"{name} {value}" for name, value in DIRECTIVES.items())


class ContentSecurityPolicyMiddleware:
    """Add POLICY to every response that does not set its own Content-Security-Policy.

    Works in both sync and async stacks, so under daphne it adds no thread hop.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        return self.apply(response)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return self.apply(response)

    @staticmethod
    def apply(response: HttpResponseBase) -> HttpResponseBase:
        """Set the policy unless the view chose one; return the response."""
        if HEADER not in response:
            response[HEADER] = POLICY
        return response
