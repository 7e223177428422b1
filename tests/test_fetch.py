"""The SSRF-safe image fetcher against a real HTTP(S) server on loopback, reachable only through
the allow-list setting. DNS answers are replaced (the one boundary that cannot run here) only to
name a host that must resolve to loopback, or to change its answer between two lookups."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from product_studio.config import Settings
from product_studio.errors import BadInput, TransientError
from product_studio.fetch import fetch_image, refusal
from product_studio.sniff import media_type as sniff


def encoded(fmt: str, size: int = 96) -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).resize((size, size * 2 // 3)).save(buf, fmt)
    return buf.getvalue()


JPEG, PNG, WEBP = encoded("JPEG"), encoded("PNG"), encoded("WEBP")
HTML = b"<!doctype html><html><body>not an image</body></html>"


class ImageServer(http.server.ThreadingHTTPServer):
    """Routes for every case; remembers the Host header and path of each request."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.seen.append((self.headers.get("Host", ""), self.path))
                path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
                route = {
                    "/coffee.jpg": lambda: self.body(JPEG, "image/jpeg"),
                    "/coffee.png": lambda: self.body(PNG, "image/png; charset=binary"),
                    "/coffee.webp": lambda: self.body(WEBP, "image/webp"),
                    "/octet": lambda: self.body(PNG, "application/octet-stream"),
                    "/mislabelled.png": lambda: self.body(JPEG, "image/png"),
                    "/page.html": lambda: self.body(HTML, "text/html"),
                    "/fake.jpg": lambda: self.body(HTML, "image/jpeg"),
                    "/drawing.svg": lambda: self.body(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
                    "/to": lambda: self.redirect(query["url"][0]),
                    "/loop": lambda: self.redirect("/loop"),
                    "/declared-huge.jpg": lambda: self.declared_huge(),
                    "/endless.jpg": lambda: self.endless(),
                    "/slow.jpg": lambda: self.slow(),
                    "/drip.jpg": lambda: self.drip(),
                }.get(path)
                if path.startswith("/status/"):
                    self.send_response(int(path.rsplit("/", 1)[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif route is None:
                    self.send_error(404)
                else:
                    route()

            def body(self, data: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def declared_huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.write(JPEG[:100])

            def endless(self) -> None:  # no length: only the streaming cap can stop it
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(JPEG[:1000])
                    for _ in range(2000):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass  # the client hung up at its cap

            def slow(self) -> None:
                time.sleep(3)
                self.body(JPEG, "image/jpeg")

            def drip(self) -> None:  # every single read is quick; only a total deadline stops it
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(JPEG)))
                self.end_headers()
                try:
                    for i in range(0, 60):
                        self.wfile.write(JPEG[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        pass  # clients hang up on purpose (caps, timeouts)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
def server():
    srv = ImageServer()
    yield srv
    srv.shutdown()
    srv.server_close()


ALLOWED = Settings(fetch_allow=["127.0.0.1"], fetch_timeout=5)


@pytest.fixture
def fake_dns(monkeypatch):
    """Answer chosen names with chosen addresses (one list per lookup); others go to the real resolver."""
    real = socket.getaddrinfo
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        ips = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port) if ":" not in ip else (ip, port, 0, 0)) for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


# --- what comes back -------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "kind", "data"), [("/coffee.jpg", "image/jpeg", JPEG),
                                                    ("/coffee.png", "image/png", PNG),
                                                    ("/coffee.webp", "image/webp", WEBP),
                                                    ("/octet", "image/png", PNG),
                                                    ("/mislabelled.png", "image/jpeg", JPEG)])
def test_allowed_loopback_image_is_fetched_and_typed_by_its_bytes(server, path, kind, data):
    got = fetch_image(server.url(path), ALLOWED)
    assert got.data == data and got.content_type == kind and got.final_url == server.url(path)
    assert server.seen[-1] == (f"127.0.0.1:{server.port}", path)


def test_redirects_are_followed_and_the_final_url_reported(server):
    target = server.url("/coffee.jpg")
    got = fetch_image(server.url(f"/to?url={target}"), ALLOWED)
    assert got.data == JPEG and got.final_url == target
    relative = fetch_image(server.url("/to?url=/coffee.png"), ALLOWED)
    assert relative.data == PNG and relative.final_url == server.url("/coffee.png")


# --- refused addresses -----------------------------------------------------------------------------

def test_loopback_is_refused_without_the_allow_list(server):
    with pytest.raises(BadInput, match=r"refused: 127\.0\.0\.1 is a loopback address") as err:
        fetch_image(server.url("/coffee.jpg"), Settings(fetch_timeout=5))
    assert server.url("/coffee.jpg") in str(err.value)
    assert server.seen == [], "a refused address must not be connected to"


def test_a_dns_name_resolving_to_loopback_is_refused(server):
    with pytest.raises(BadInput, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback address"):
        fetch_image(server.url("/coffee.jpg", host="localhost"), Settings(fetch_timeout=5))
    assert server.seen == []


def test_every_address_of_a_name_is_checked(server, fake_dns):
    answers, _ = fake_dns
    answers["cdn.test"] = [["127.0.0.1", "10.0.0.7"]]  # the first is allowed, the second is not
    with pytest.raises(BadInput, match=r"cdn\.test resolves to 10\.0\.0\.7, a private address"):
        fetch_image(server.url("/coffee.jpg", host="cdn.test"), ALLOWED)
    assert server.seen == []


@pytest.mark.parametrize(("location", "why"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/", "fd00:ec2::254 is a cloud metadata address"),
    ("http://10.1.2.3/x.jpg", "10.1.2.3 is a private address"),
    ("http://[::1]:9/x.jpg", "::1 is a loopback address"),
    ("http://[::ffff:192.168.0.1]/x.jpg", "is a private address"),
    ("file:///etc/passwd", "only http and https URLs are fetched, not file"),
])
def test_a_redirect_to_a_refused_address_is_refused(server, location, why):
    with pytest.raises(BadInput, match="redirected to") as err:
        fetch_image(server.url(f"/to?url={location}"), ALLOWED)
    assert why in str(err.value)


def test_a_redirect_to_a_name_resolving_to_a_private_address_is_refused(server, fake_dns):
    answers, _ = fake_dns
    answers["internal.test"] = [["192.168.1.20"]]
    with pytest.raises(BadInput, match=r"internal\.test resolves to 192\.168\.1\.20, a private address"):
        fetch_image(server.url("/to?url=http://internal.test/admin.jpg"), ALLOWED)


def test_the_connection_goes_to_the_address_that_was_checked(server, fake_dns):
    """DNS rebinding: the name answers loopback (allowed) when checked, metadata afterwards. The
    fetch must connect to what it checked and never ask again; the Host header keeps the name."""
    answers, lookups = fake_dns
    answers["rebind.test"] = [["127.0.0.1"], ["169.254.169.254"]]
    got = fetch_image(server.url("/coffee.jpg", host="rebind.test"), ALLOWED)
    assert got.data == JPEG
    assert lookups == ["rebind.test"]
    assert server.seen == [(f"rebind.test:{server.port}", "/coffee.jpg")]


def test_an_allowed_host_name_may_resolve_to_a_private_address(server, fake_dns):
    answers, _ = fake_dns
    answers["images.internal"] = [["127.0.0.1"]]
    got = fetch_image(server.url("/coffee.jpg", host="images.internal"),
                      Settings(fetch_allow=["Images.Internal"], fetch_timeout=5))
    assert got.data == JPEG


def test_refusal_reasons():
    import ipaddress

    reasons = {a: refusal(ipaddress.ip_address(a)) for a in (
        "8.8.8.8", "2606:4700::1111", "127.0.0.2", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.1.1",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1",
        "2002:a00:1::", "fd00:ec2::254")}
    assert reasons["8.8.8.8"] is None and reasons["2606:4700::1111"] is None
    assert all(reasons[a] for a in reasons if a not in ("8.8.8.8", "2606:4700::1111")), reasons
    assert reasons["2002:a00:1::"] == "a private address"  # 6to4 wrapping 10.0.0.1
    assert reasons["fd00:ec2::254"] == "a cloud metadata address"


# --- limits ----------------------------------------------------------------------------------------

def test_too_many_redirects(server):
    with pytest.raises(BadInput, match="more than 3 redirects"):
        fetch_image(server.url("/loop"), Settings(fetch_allow=["127.0.0.1"], fetch_max_redirects=3))
    assert len(server.seen) == 4


def test_bytes_are_capped_while_streaming(server):
    small = Settings(fetch_allow=["127.0.0.1"], max_input_bytes=200_000, fetch_timeout=10)
    with pytest.raises(BadInput, match="more than 200000 bytes"):
        fetch_image(server.url("/endless.jpg"), small)
    with pytest.raises(BadInput, match="1000000000 bytes is over the 200000-byte limit"):
        fetch_image(server.url("/declared-huge.jpg"), small)


def test_a_server_that_never_answers_times_out(server):
    with pytest.raises(TransientError, match="timed out"):
        fetch_image(server.url("/slow.jpg"), Settings(fetch_allow=["127.0.0.1"], fetch_timeout=0.5))


def test_the_timeout_covers_the_whole_fetch_not_each_read(server):
    # 60 bytes, one every 0.1 s: no single read waits long, the whole body takes 6 s.
    with pytest.raises(TransientError, match="timed out"):
        fetch_image(server.url("/drip.jpg"), Settings(fetch_allow=["127.0.0.1"], fetch_timeout=1))


def test_server_errors_are_transient_and_client_errors_are_not(server):
    for status in (500, 503, 429):
        with pytest.raises(TransientError, match=f"answered {status}"):
            fetch_image(server.url(f"/status/{status}"), ALLOWED)
    with pytest.raises(BadInput, match="answered 404"):
        fetch_image(server.url("/status/404"), ALLOWED)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(TransientError, match="cannot connect"):
        fetch_image(f"http://127.0.0.1:{closed}/x.jpg", ALLOWED)


# --- types -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "message"), [("/page.html", "served as text/html"),
                                               ("/drawing.svg", "served as image/svg+xml"),
                                               ("/fake.jpg", "not a JPEG, PNG")])
def test_declared_type_and_magic_bytes_must_say_raster_image(server, path, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        fetch_image(server.url(path), ALLOWED)


def test_sniff():
    assert sniff(JPEG[:16]) == "image/jpeg" and sniff(PNG[:16]) == "image/png" and sniff(WEBP[:16]) == "image/webp"
    assert sniff(b"\0\0\0\x1cftypavif\0\0\0\0") == "image/avif"
    assert sniff(b"GIF89a\x01\0\x01\0") == "image/gif"
    assert sniff(HTML) is None and sniff(b"%PDF-1.7 ...") is None and sniff(b"<svg") is None


# --- TLS: SNI and the certificate check use the real name ------------------------------------------

@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
                   check=True, capture_output=True)
    names: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate, as a deployment would its CA
    srv = ImageServer(tls=ctx)
    yield srv, names
    srv.shutdown()
    srv.server_close()


def test_https_keeps_sni_and_certificate_checks_on_the_real_name(tls_server, fake_dns):
    srv, names = tls_server
    answers, _ = fake_dns
    answers["images.test"] = [["127.0.0.1"]]
    answers["other.test"] = [["127.0.0.1"]]
    got = fetch_image(srv.url("/coffee.jpg", host="images.test", scheme="https"), ALLOWED)
    assert got.data == JPEG and names == ["images.test"]
    assert srv.seen[-1] == (f"images.test:{srv.port}", "/coffee.jpg")
    # Same address, another name: the certificate does not match it, so nothing is fetched.
    with pytest.raises(TransientError, match="(?i)certificate"):
        fetch_image(srv.url("/coffee.jpg", host="other.test", scheme="https"), ALLOWED)
