"""A small fake of Azure Key Vault (secrets) and of Entra ID's token endpoint, for envrun's tests.

No emulator of Key Vault exists, so this speaks the published contract, over HTTPS with a CA
it generates (the SDK sends bearer tokens over HTTPS only) and writes to --ca-out:
- Get Secret: GET /secrets/{name}/{version}?api-version=7.x (empty version = latest) answers
  {"value", "id", "attributes": {"enabled", "created", "updated", "recoveryLevel"}}.
  https://learn.microsoft.com/rest/api/keyvault/secrets/get-secret/get-secret
- A request without a bearer token gets 401 with
  `WWW-Authenticate: Bearer authorization="{authority}/{tenant}", resource="https://vault.azure.net"`.
  https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses
- Errors are {"error": {"code", "message", "innererror"?}}: 404 SecretNotFound, 403
  Forbidden (innererror AccessDenied or SecretDisabled), 429 Throttled with Retry-After.
  https://learn.microsoft.com/azure/key-vault/general/overview-throttling
- Token endpoint: POST /{tenant}/oauth2/v2.0/token, grant_type=client_credentials with a
  client_secret, or with a client_assertion (workload identity), answers
  {"token_type": "Bearer", "expires_in", "access_token"}; a wrong secret gets 401
  invalid_client with AADSTS7000215.
  https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow

State (--state, JSON): {"secrets": {name (lower case): {version: {"value", "enabled"}}},
"latest": {name: version}, "denied": [names], "throttle": {name: count}, "delay_ms": n,
"tenant": "...", "client_id": "...", "client_secret": "...", "assertion": "...",
"static_tokens": [tokens accepted without the token endpoint]}.
GET /_stats (plain HTTP on --stats-port) reports {"get": n, "max_in_flight": n, "token": n,
"challenge": n, "per_name": {...}}.
"""

import argparse
import datetime
import ipaddress
import json
import os
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certs(directory):
    """A CA and a certificate for localhost/127.0.0.1 signed by it; returns (cert, key, ca)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envrun test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = [os.path.join(directory, n) for n in ("cert.pem", "key.pem", "ca.pem")]
    with open(paths[0], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(paths[2], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    return paths


class Fake:
    def __init__(self, state, port):
        self.state = state
        self.port = port
        self.lock = threading.Lock()
        self.in_flight = 0
        # Tokens handed out elsewhere (the Azure CLI test's `az`), plus those issued here.
        self.tokens = set(state.get("static_tokens", []))
        self.throttled = {}
        self.stats = {"get": 0, "max_in_flight": 0, "token": 0, "challenge": 0, "per_name": {}}


def error(code, status, message, inner=None):
    body = {"error": {"code": code, "message": message}}
    if inner:
        body["error"]["innererror"] = {"code": inner}
    return status, body, []


def get_secret(fake, name, version):
    key = name.lower()
    if key in fake.state.get("denied", []):
        return error(
            "Forbidden",
            403,
            "The user, group or application does not have secrets get permission on key vault "
            "'fake;location=local'.",
            "AccessDenied",
        )
    with fake.lock:
        left = fake.throttled.setdefault(key, fake.state.get("throttle", {}).get(key, 0))
        if left > 0:
            fake.throttled[key] = left - 1
            status, body, _ = error(
                "Throttled",
                429,
                "Request was not processed because too many requests were received. "
                "Reason: VaultRequestTypeLimitReached",
            )
            return status, body, [("Retry-After", "1")]
    versions = fake.state.get("secrets", {}).get(key)
    if not versions:
        return error(
            "SecretNotFound",
            404,
            f"A secret with (name/id) {name} was not found in this key vault. If you recently "
            "deleted this secret you may be able to recover it using the correct recovery "
            "command.",
        )
    version = version or fake.state.get("latest", {}).get(key) or sorted(versions)[-1]
    entry = versions.get(version)
    if entry is None:
        return error(
            "SecretNotFound",
            404,
            f"A secret with (name/id) {name}/{version} was not found in this key vault.",
        )
    if not entry.get("enabled", True):
        return error(
            "Forbidden", 403, "Operation get is not allowed on a disabled secret.", "SecretDisabled"
        )
    return (
        200,
        {
            "value": entry["value"],
            "id": f"https://localhost:{fake.port}/secrets/{name}/{version}",
            "attributes": {
                "enabled": True,
                "created": 1493938410,
                "updated": 1493938410,
                "recoveryLevel": "Recoverable+Purgeable",
            },
        },
        [],
    )


def handler(fake, stats_only=False):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, code, body, headers=()):
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            url = urlsplit(self.path)
            if stats_only:
                with fake.lock:
                    return self.reply(200, fake.stats)
            parts = url.path.strip("/").split("/")
            query = parse_qs(url.query)
            if not parts or parts[0] != "secrets" or len(parts) not in (2, 3):
                return self.reply(*error("BadParameter", 400, f"no route {url.path}")[:2])
            if not query.get("api-version"):
                return self.reply(
                    *error("MissingApiVersionParameter", 400,
                           "The api-version query parameter (?api-version=) is required for all requests.")[:2]
                )
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in fake.tokens:
                with fake.lock:
                    fake.stats["challenge"] += 1
                tenant = fake.state.get("tenant", "tenant")
                challenge = (
                    f'Bearer authorization="https://login.microsoftonline.com/{tenant}", '
                    'resource="https://vault.azure.net"'
                )
                status, body, _ = error(
                    "Unauthorized", 401, "AKV10000: Request is missing a Bearer or PoP token."
                )
                return self.reply(status, body, [("WWW-Authenticate", challenge)])
            name = parts[1]
            version = parts[2] if len(parts) == 3 else ""
            with fake.lock:
                fake.stats["get"] += 1
                label = f"{name.lower()}/{version}"
                fake.stats["per_name"][label] = fake.stats["per_name"].get(label, 0) + 1
                fake.in_flight += 1
                fake.stats["max_in_flight"] = max(fake.stats["max_in_flight"], fake.in_flight)
            try:
                if fake.state.get("delay_ms"):
                    time.sleep(fake.state["delay_ms"] / 1000)
                status, body, headers = get_secret(fake, name, version)
                self.reply(status, body, headers)
            finally:
                with fake.lock:
                    fake.in_flight -= 1

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            tenant = fake.state.get("tenant", "tenant")
            if self.path.split("?")[0] != f"/{tenant}/oauth2/v2.0/token":
                return self.reply(
                    400,
                    {"error": "invalid_request",
                     "error_description": f"AADSTS90002: Tenant not found. ({self.path})"},
                )
            with fake.lock:
                fake.stats["token"] += 1
            one = lambda k: (form.get(k) or [""])[0]
            good = one("grant_type") == "client_credentials" and one("client_id") == fake.state.get(
                "client_id"
            ) and one("scope").endswith("/.default")
            if one("client_secret"):
                good = good and one("client_secret") == fake.state.get("client_secret")
            elif one("client_assertion"):
                good = (
                    good
                    and one("client_assertion_type")
                    == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    and one("client_assertion") == fake.state.get("assertion")
                )
            else:
                good = False
            if not good:
                return self.reply(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                    },
                )
            token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(24)
            with fake.lock:
                fake.tokens.add(token)
            self.reply(
                200,
                {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                 "access_token": token},
            )

        def log_message(self, fmt, *args):
            sys.stderr.write("azure-fake: " + (fmt % args) + "\n")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stats-port", type=int, required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--dir", required=True, help="where the certificates go (ca.pem last)")
    args = ap.parse_args()
    with open(args.state) as f:
        state = json.load(f)
    fake = Fake(state, args.port)
    cert, key, _ = make_certs(args.dir)
    ThreadingHTTPServer.request_queue_size = 256
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), handler(fake))
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The handshake happens in the handler's thread, not in accept().
    httpd.socket = context.wrap_socket(
        httpd.socket, server_side=True, do_handshake_on_connect=False
    )
    stats = ThreadingHTTPServer(("127.0.0.1", args.stats_port), handler(fake, stats_only=True))
    stats.daemon_threads = True
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
