"""How the dashboard stays safe in a browser.

- Sign-in: the user pastes a token once; it is kept in an httpOnly, SameSite=Strict
  cookie (scripts cannot read it, other sites' requests do not carry it), and every
  gateway call is made with it, so the gateway's roles decide what the user may do.
- CSRF: every state-changing request (POST) must carry the page's CSRF value (a form
  field or the X-CSRF-Token header) equal to its httpOnly cookie, and must come from
  this origin when the browser says where it came from (Origin, Sec-Fetch-Site): the
  double-submit cookie with an origin check, as Django does.
- Headers: a strict Content-Security-Policy (scripts only from here, never inline, no
  eval), no framing, no sniffing, referrers only within this site (a sign-in link's key
  never leaves it), and no caching of pages with data.
- `metalearn up`'s sign-in link signs in once, and only in its first minutes
  (`LaunchKey`); the sign-in page shows only its own sentences (`LOGIN_MESSAGES`),
  never text from its address.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "metalearn_token"  # noqa: S105 - a cookie's name, not a secret
CSRF_COOKIE = "metalearn_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"

# plotly.js creates <style> elements for its own rules: an empty one it then fills
# through the CSSOM (the sha256 of ""), and fixed ones; its parallel coordinates also
# set empty style attributes ('unsafe-hashes' lets hashes cover attributes). Allowing
# exactly these keeps style-src free of 'unsafe-inline'. The browser tests draw every
# kind of chart the pages use and fail on any CSP violation, so a plotly upgrade (or a
# new chart) that needs more is caught.
_PLOTLY_STYLES = (
    "'unsafe-hashes'",
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
    "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='",
)
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        f"style-src 'self' {' '.join(_PLOTLY_STYLES)}",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the headers above to every response; pages and data are never cached
    (static files set their own Cache-Control)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def token_of(request: Request) -> str | None:
    """The signed-in user's token, from the cookie."""
    token = request.cookies.get(TOKEN_COOKIE, "").strip()
    return token or None


def csrf_value(request: Request) -> str:
    """This browser's CSRF value: its cookie's, or a new one `remember_csrf` will set."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) < 32:
        value = request.state.new_csrf = getattr(request.state, "new_csrf", None) or (
            secrets.token_urlsafe(32)
        )
    return value


def remember_csrf(request: Request, response: Response, secure: bool) -> None:
    """Sets the CSRF cookie when this request made a new value."""
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure, path="/"
        )


def set_token(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


def forget_token(response: Response) -> None:
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether the browser says this request comes from one of our own pages. Browsers
    send Sec-Fetch-Site and Origin with every POST; a client that sends neither (curl,
    a test) passes this check and still needs the CSRF value."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


async def csrf_ok(request: Request) -> bool:
    """Whether a state-changing request carries this browser's CSRF value and comes from
    this origin."""
    if not same_origin(request):
        return False
    expected = request.cookies.get(CSRF_COOKIE, "")
    if len(expected) < 32:
        return False
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    return sent is not None and same_secret(sent, expected)


def same_secret(given: str, expected: str) -> bool:
    """Compares secrets in constant time (no timing tells how much of a guess was right)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL:
    an open redirect would send a user who trusts this page anywhere)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/attempts"
    return value


# What the sign-in page may say when another page sends a browser there (`/login?m=`):
# its own sentences, by code. A message in the address would let any link put words of
# its choosing ("your account is locked: call ...") on this site's page; an unknown code
# shows nothing.
LOGIN_MESSAGES = {
    "revoked": "The gateway no longer accepts your token: sign in again.",
}


class LaunchKey:
    """`metalearn up`'s sign-in link: its key signs one browser in with the local admin
    token, once, and only within `seconds` of the dashboard's start (when `up` printed
    it). A link left in a terminal's scrollback, a shell's history or a shared screen
    is then worth nothing.

    Its state lives in this process: the dashboard is one process (one uvicorn server,
    no workers; `metalearn up` starts one and never restarts it), so a key used here is
    used. The check and the use happen under one lock, so two requests at once cannot
    both get in. Dashboards in several processes would need the use recorded where they
    all look (a row, a file created exclusively) instead."""

    def __init__(
        self,
        key: str,
        token: str,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._token = token
        self._clock = clock
        self._deadline = clock() + seconds
        self._lock = threading.Lock()

    def redeem(self, given: str) -> str | None:
        """The token, when `given` is the key, unused and in time (the key is then used
        up); None otherwise, whichever it is, so a refusal tells a guesser nothing."""
        with self._lock:
            if not (self._key and self._token) or self._clock() > self._deadline:
                return None
            if not same_secret(given, self._key):
                return None
            token, self._key, self._token = self._token, "", ""
            return token


Handler = Callable[[Request], Awaitable[Response]]
