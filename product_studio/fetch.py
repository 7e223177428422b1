"""Fetching image URLs that strangers chose (webhook payloads, batch CSVs) without SSRF.

Every hop of a fetch, redirects included:
  1. only http(s); the host is resolved once and EVERY address it resolves to must be public
     (not private, loopback, link-local, metadata, multicast, reserved...) or on the allow-list;
  2. the connection goes to exactly those validated addresses: the HTTP library never resolves
     the name again, so a DNS answer that changes between check and connect (rebinding) cannot
     smuggle in another address. The URL is unchanged, so the Host header, TLS SNI and the
     certificate check all use the real host name.
One deadline covers the whole fetch (DNS, connect, TLS, redirects, every read); the body is capped
while it streams; the declared type and the magic bytes must both say raster image.

    fetched = fetch_image("https://cdn.example.com/shirt.jpg")   # Fetched(data, content_type, final_url)

Completion callbacks are POSTed by `post`, through the same check and the same pinned connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import httpcore
import httpx

from .config import Settings, get_settings
from .errors import BadInput, TransientError
from .sniff import MEDIA_TYPES, media_type, sniff

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints: named in refusals because they are what SSRF is usually after.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "100.100.100.200", "fd00:ec2::254", "fd00:ec2::23"))
# Declared types we take; the magic bytes must agree that it is one of these kinds of raster.
RASTER_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/x-png", "image/webp",
                          "image/gif", "image/tiff", "image/bmp", "image/x-ms-bmp", "image/x-bmp", "image/avif",
                          "image/heic", "image/heif"})
# Generic "some bytes" labels (S3, some CDNs): the magic bytes decide.
UNDECLARED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUS = frozenset({408, 425, 429})
_USER_AGENT = "product-studio-fetch/0.1"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str  # from the magic bytes, e.g. "image/jpeg"
    final_url: str  # after redirects


def fetch_image(url: str, settings: Settings | None = None) -> Fetched:
    """GET an image URL safely. BadInput when the URL, an address, the size or the type is refused
    (retrying cannot help); TransientError for timeouts, connection errors and 5xx answers."""
    settings = settings or get_settings()
    deadline = time.monotonic() + settings.fetch_timeout
    allow = _allow_list(tuple(settings.fetch_allow))
    current = _parse(url, url)
    for _ in range(settings.fetch_max_redirects + 1):
        addresses = _checked_addresses(current, url, allow, deadline)
        outcome = _get(current, addresses, deadline, settings, url)
        if isinstance(outcome, Fetched):
            return outcome
        current = _parse(_join(current, outcome, url), url)  # a redirect: check the new hop from scratch
    raise BadInput(f"{_shown(url)}: more than {settings.fetch_max_redirects} redirects")


def check_url(url: str, settings: Settings | None = None) -> str:
    """Refuse (BadInput) a URL we would send to that is not http(s) or reaches a private,
    loopback, link-local or metadata address (unless allowed): completion callbacks go through
    this, so a job cannot make the service POST into its own network."""
    settings = settings or get_settings()
    _checked_addresses(_parse(url, url), url, _allow_list(tuple(settings.fetch_allow)),
                       time.monotonic() + settings.fetch_timeout)
    return url


def post(url: str, body: bytes, headers: dict[str, str], settings: Settings | None = None,
         timeout: float = 10.0) -> int:
    """POST `body` to `url` the way fetches GET: the host is resolved once, every address it
    resolves to is checked (as `check_url`), and the connection goes to exactly those addresses,
    so a DNS answer that changes between the check and the send (rebinding) cannot redirect the
    request into a private network. Redirects are not followed. `timeout` (seconds) covers DNS,
    connect, TLS, the upload and the answer. Returns the HTTP status. Raises BadInput when the
    URL or an address is refused (retrying cannot help) and TransientError when the connection
    fails or times out. Completion callbacks are sent through here."""
    settings = settings or get_settings()
    deadline = time.monotonic() + timeout
    u = _parse(url, url)
    addresses = _checked_addresses(u, url, _allow_list(tuple(settings.fetch_allow)), deadline)
    shown = _shown(url)
    sent = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    sent.append((b"User-Agent", _USER_AGENT.encode()))
    target = httpcore.URL(scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path)
    try:
        with httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=_PinnedBackend(u.host, addresses,
                                                                                               deadline),
                                     max_connections=1, retries=0) as pool:
            with pool.stream("POST", target, headers=sent, content=body) as response:
                return response.status  # the answer's body is not read
    except httpcore.TimeoutException:
        raise TransientError(f"{shown}: timed out (the limit is {timeout:g} s in all)") from None
    except (httpcore.ConnectError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise TransientError(f"{shown}: the connection failed: {exc or type(exc).__name__}") from None


# --- URLs and addresses ---------------------------------------------------------------------------

def _shown(url: str | httpx.URL) -> str:
    """A URL for messages: no credentials, no query (presigned URLs carry tokens), bounded."""
    try:
        u = httpx.URL(str(url))
        text = f"{u.scheme}://{u.netloc.decode('ascii')}{u.path}"
    except (httpx.InvalidURL, ValueError):
        text = str(url)
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _join(base: httpx.URL, location: str, original: str) -> str:
    try:
        return str(base.join(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadInput(f"{_shown(original)}: redirected to an invalid URL ({exc})") from None


def _parse(url: str, original: str) -> httpx.URL:
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadInput(f"{_shown(original)}: not a valid URL ({exc})") from None
    if u.scheme not in ("http", "https"):
        where = "" if url == original else f" (redirected to {_shown(url)})"
        raise BadInput(f"{_shown(original)}{where}: only http and https URLs are fetched, not {u.scheme or 'none'}")
    if not u.host:
        raise BadInput(f"{_shown(original)}: the URL has no host")
    return u


@dataclass(frozen=True)
class _Allow:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def host(self, name: str) -> bool:
        return name.rstrip(".").lower() in self.hosts

    def address(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


@lru_cache(maxsize=8)
def _allow_list(entries: tuple[str, ...]) -> _Allow:
    hosts, networks = set(), []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(entry.rstrip(".").lower())
    return _Allow(frozenset(hosts), tuple(networks))


def refusal(ip: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):  # IPv4 wrapped in IPv6 is judged as that IPv4
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and (why := refusal(embedded)):
            return why
    checks = ((ip in METADATA, "a cloud metadata address"), (ip.is_loopback, "a loopback address"),
              (ip.is_link_local, "a link-local address"), (ip.is_multicast, "a multicast address"),
              (ip.is_unspecified, "the unspecified address"), (ip.is_private, "a private address"),
              (ip.is_reserved, "a reserved address"), (not ip.is_global, "not a public address"))
    return next((why for bad, why in checks if bad), None)


def _checked_addresses(u: httpx.URL, original: str, allow: _Allow, deadline: float) -> list[IPAddress]:
    """Every address the host resolves to, each one checked; refused if any is not allowed."""
    host = u.host
    port = u.port or (443 if u.scheme == "https" else 80)
    via = "" if str(u) == original else f" (redirected to {_shown(u)})"
    try:
        addresses = [ipaddress.ip_address(host)]
        literal = True
    except ValueError:
        addresses = _resolve(host, port, deadline, original)
        literal = False
    if allow.host(host):
        return addresses
    for ip in addresses:
        why = refusal(ip)
        if why and not allow.address(ip):
            subject = f"{ip} is" if literal else f"{host} resolves to {ip},"
            # Never suggest allowing cloud metadata or link-local addresses: they are what SSRF is after.
            hint = "" if ip in METADATA or ip.is_link_local else (
                f" (a host you trust, e.g. an internal image server, can be allowed with "
                f"PRODUCT_STUDIO_FETCH_ALLOW={host})")
            raise BadInput(f"{_shown(original)}{via}: refused: {subject} {why}{hint}")
    return addresses


def _resolve(host: str, port: int, deadline: float, original: str) -> list[IPAddress]:
    """getaddrinfo under the fetch's deadline (it has no timeout of its own)."""
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            result.append(exc)

    worker = threading.Thread(target=lookup, daemon=True, name="fetch-dns")
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if not result:
        raise TransientError(f"{_shown(original)}: resolving {host} timed out")
    answer = result[0]
    if isinstance(answer, socket.gaierror) and answer.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        raise BadInput(f"{_shown(original)}: the host {host} does not exist")
    if isinstance(answer, Exception):
        raise TransientError(f"{_shown(original)}: cannot resolve {host}: {answer}")
    seen = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in answer)
    if not seen:
        raise BadInput(f"{_shown(original)}: the host {host} has no address")
    return list(seen)


# --- the pinned connection --------------------------------------------------------------------------

def _remaining(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """The wait allowed now: the caller's timeout, cut to what is left before the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the fetch's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every wait ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        left = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects `host` to the validated addresses only (tried in order), never resolving it again."""

    def __init__(self, host: str, addresses: list[IPAddress], deadline: float):
        self._host, self._addresses, self._deadline = host, addresses, deadline
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        if host.rstrip(".").lower() != self._host.rstrip(".").lower():  # cannot happen: one pool per hop
            raise httpcore.ConnectError(f"refusing to connect to {host}: this connection is pinned to {self._host}")
        error: Exception | None = None
        for ip in self._addresses:
            left = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
            try:
                stream = self._tcp.connect_tcp(str(ip), port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert error is not None
        raise error

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@lru_cache(maxsize=1)
def _ssl_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    import certifi

    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def _ssl_context() -> ssl.SSLContext:
    # Like httpx: SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's bundle.
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@contextmanager
def _pinned_response(u: httpx.URL, addresses: list[IPAddress], deadline: float) -> Iterator[httpcore.Response]:
    backend = _PinnedBackend(u.host, addresses, deadline)
    with httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=backend, max_connections=1,
                                 retries=0) as pool:
        # Host comes from the URL (httpcore adds it); identity: the cap counts the bytes we store.
        headers = [(b"User-Agent", _USER_AGENT.encode()), (b"Accept", b"image/*"),
                   (b"Accept-Encoding", b"identity")]
        url = httpcore.URL(scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path)
        with pool.stream("GET", url, headers=headers) as response:
            yield response


# --- one hop ---------------------------------------------------------------------------------------

def _get(u: httpx.URL, addresses: list[IPAddress], deadline: float, settings: Settings,
         original: str) -> Fetched | str:
    """Fetch one hop: the image, or the Location of a redirect."""
    shown, max_bytes = _shown(original), settings.max_input_bytes
    try:
        with _pinned_response(u, addresses, deadline) as r:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in r.headers}
            if r.status in REDIRECTS and headers.get("location"):
                return headers["location"]
            if r.status >= 500 or r.status in RETRYABLE_STATUS:
                raise TransientError(f"{shown}: the server answered {r.status}")
            if r.status != 200:
                raise BadInput(f"{shown}: the server answered {r.status}, not 200")
            declared = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if declared not in RASTER_TYPES and declared not in UNDECLARED:
                raise BadInput(f"{shown}: served as {declared}, not a raster image")
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise BadInput(f"{shown}: {int(length)} bytes is over the {max_bytes}-byte limit")
            data = _read_capped(r.iter_stream(), max_bytes, deadline, shown)
    except httpcore.TimeoutException:
        raise TransientError(f"{shown}: timed out (the limit is {settings.fetch_timeout:g} s in all)") from None
    except httpcore.ConnectError as exc:
        raise TransientError(f"{shown}: cannot connect: {exc or type(exc).__name__}") from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise TransientError(f"{shown}: the connection failed: {exc or type(exc).__name__}") from None
    try:
        kind = MEDIA_TYPES[sniff(data)]
    except BadInput as exc:
        raise BadInput(f"{shown}: {exc}") from None
    return Fetched(data, kind, str(u))


def _read_capped(chunks: Iterator[bytes], max_bytes: int, deadline: float, shown: str) -> bytes:
    buf = bytearray()
    sniffed = False
    for chunk in chunks:
        buf += chunk
        if len(buf) > max_bytes:
            raise BadInput(f"{shown}: more than {max_bytes} bytes (the input limit)")
        if not sniffed and len(buf) >= 16:  # refuse an HTML page before downloading all of it
            # ISO-BMFF (AVIF, HEIF) may name its image brand after the first 16 bytes: the whole
            # file's sniff decides those.
            if buf[4:8] != b"ftyp" and media_type(bytes(buf[:16])) is None:
                raise BadInput(f"{shown}: the bytes are not a JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF or HEIC image")
            sniffed = True
        if time.monotonic() > deadline:
            raise httpcore.ReadTimeout("the fetch's deadline passed")
    return bytes(buf)
