"""A small fake of Google Secret Manager's REST API, for envrun's tests.

No emulator of Secret Manager exists, so this speaks the published contract:
- access: GET /v1/{name=projects/*/secrets/*/versions/*}:access (also under
  projects/*/locations/*/...) answers {"name", "payload": {"data": base64, "dataCrc32c":
  int64 as a string}}, with `latest` the newest enabled version.
  https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access
  https://cloud.google.com/secret-manager/docs/reference/rest/v1/SecretPayload
- errors: {"error": {"code", "message", "status"}} with NOT_FOUND (404), PERMISSION_DENIED
  (403), UNAUTHENTICATED (401), FAILED_PRECONDITION (400: version disabled or destroyed),
  RESOURCE_EXHAUSTED (429).
  https://cloud.google.com/apis/design/errors
- auth: a self-signed service-account JWT (RS256, `kid` = private_key_id, `iss` = the
  client_email), as Google's client libraries send it, verified with the key this fake
  generated and wrote to --sa-out; or an access token from the OAuth token endpoint
  (POST /token, grant_type=refresh_token, the flow of `gcloud` user credentials).
  https://developers.google.com/identity/protocols/oauth2/service-account#jwt-auth
  https://developers.google.com/identity/protocols/oauth2/web-server#offline

State comes from a JSON file (--state): {"secrets": {"projects/p/secrets/s": {"1":
{"data": "text", "state": "ENABLED"|"DISABLED"|"DESTROYED"}}}, "denied": [secret names],
"throttle": {secret name: how many 429s first}, "bad_crc": [secret names], "delay_ms": n,
"refresh_token": "...", "subject_token": "..."}. GET /_stats reports {"access": n, "max_in_flight": n, "token": n,
"per_name": {...}}.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected, as in RFC 3720 appendix B.4."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Fake:
    def __init__(self, state, public_key, key_id, email):
        self.state = state
        self.public_key = public_key
        self.key_id = key_id
        self.email = email
        self.lock = threading.Lock()
        self.in_flight = 0
        self.stats = {"access": 0, "max_in_flight": 0, "token": 0, "per_name": {}}
        self.tokens = set()
        self.throttled = {}

    def authorized(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        token = header[len("Bearer "):]
        if token in self.tokens:
            return True
        parts = token.split(".")
        if len(parts) != 3 or self.public_key is None:
            return False
        try:
            head = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            self.public_key.verify(
                b64url_decode(parts[2]),
                (parts[0] + "." + parts[1]).encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return False
        now = time.time()
        return (
            head.get("alg") == "RS256"
            and head.get("kid") == self.key_id
            and claims.get("iss") == self.email
            and "auth/cloud-platform" in claims.get("scope", "")
            and claims.get("iat", now + 1) <= now + 60
            and claims.get("exp", 0) > now
        )


def error(code, status, message):
    return code, {"error": {"code": code, "message": message, "status": status}}


def access(fake, name):
    """The answer to GET /v1/{name}:access, as (HTTP status, JSON body)."""
    parts = name.split("/")
    if len(parts) < 6 or parts[0] != "projects" or parts[-2] != "versions":
        return error(400, "INVALID_ARGUMENT", f"Invalid resource name [{name}].")
    secret, version = "/".join(parts[:-2]), parts[-1]
    if secret in fake.state.get("denied", []):
        return error(
            403,
            "PERMISSION_DENIED",
            f"Permission 'secretmanager.versions.access' denied for resource '{name}' "
            "(or it may not exist).",
        )
    with fake.lock:
        left = fake.throttled.setdefault(secret, fake.state.get("throttle", {}).get(secret, 0))
        if left > 0:
            fake.throttled[secret] = left - 1
            return error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Access requests' of service "
                "'secretmanager.googleapis.com'.",
            )
    versions = fake.state.get("secrets", {}).get(secret)
    if not versions:
        return error(404, "NOT_FOUND", f"Secret [{secret}] not found or has no versions.")
    if version == "latest":
        enabled = [int(v) for v, d in versions.items() if d.get("state", "ENABLED") == "ENABLED"]
        if not enabled:
            return error(
                400, "FAILED_PRECONDITION", f"Secret [{secret}] has no enabled versions."
            )
        version = str(max(enabled))
    entry = versions.get(version)
    if entry is None:
        return error(404, "NOT_FOUND", f"Secret Version [{secret}/versions/{version}] not found.")
    state = entry.get("state", "ENABLED")
    if state != "ENABLED":
        return error(
            400,
            "FAILED_PRECONDITION",
            f"Secret Version [{secret}/versions/{version}] is in {state} state.",
        )
    data = entry["data"].encode()
    crc = crc32c(data)
    if secret in fake.state.get("bad_crc", []):
        crc ^= 1
    return 200, {
        "name": f"{secret}/versions/{version}",
        "payload": {
            "data": base64.b64encode(data).decode(),
            "dataCrc32c": str(crc),
        },
    }


def handler(fake):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body, headers=()):
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/_stats":
                with fake.lock:
                    return self.reply(200, fake.stats)
            if not (path.startswith("/v1/") and path.endswith(":access")):
                return self.reply(*error(404, "NOT_FOUND", f"no route {path}"))
            name = path[len("/v1/"):-len(":access")]
            with fake.lock:
                fake.stats["access"] += 1
                fake.stats["per_name"][name] = fake.stats["per_name"].get(name, 0) + 1
                fake.in_flight += 1
                fake.stats["max_in_flight"] = max(fake.stats["max_in_flight"], fake.in_flight)
            try:
                if fake.state.get("delay_ms"):
                    time.sleep(fake.state["delay_ms"] / 1000)
                if not fake.authorized(self.headers.get("Authorization")):
                    return self.reply(
                        *error(
                            401,
                            "UNAUTHENTICATED",
                            "Request had invalid authentication credentials.",
                        )
                    )
                code, body = access(fake, name)
                self.reply(code, body, [("Retry-After", "0")] if code == 429 else [])
            finally:
                with fake.lock:
                    fake.in_flight -= 1

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            # The endpoint takes a form (RFC 6749) or, as Google's libraries send it, JSON.
            if self.headers.get("Content-Type", "").startswith("application/json"):
                form = {k: [v] for k, v in json.loads(raw).items()}
            else:
                form = parse_qs(raw)
            if self.path == "/v1/token":
                return self.sts(form)
            if self.path != "/token":
                return self.reply(404, {"error": "not_found"})
            with fake.lock:
                fake.stats["token"] += 1
            good = fake.state.get("refresh_token")
            if (
                form.get("grant_type") != ["refresh_token"]
                or not good
                or form.get("refresh_token") != [good]
            ):
                return self.reply(
                    400,
                    {"error": "invalid_grant", "error_description": "Bad Request"},
                )
            token = "ya29." + secrets.token_urlsafe(24)
            with fake.lock:
                fake.tokens.add(token)
            self.reply(
                200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
            )

        def sts(self, form):
            """Security Token Service exchange (workload identity federation)."""
            with fake.lock:
                fake.stats["token"] += 1
            one = lambda k: (form.get(k) or [""])[0]
            expected = fake.state.get("subject_token")
            if (
                one("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
                or not expected
                or one("subject_token") != expected
                or not one("audience").startswith("//iam.googleapis.com/")
            ):
                return self.reply(
                    400,
                    {"error": "invalid_grant", "error_description": "The subject token is invalid."},
                )
            token = "ya29.sts." + secrets.token_urlsafe(24)
            with fake.lock:
                fake.tokens.add(token)
            self.reply(
                200,
                {
                    "access_token": token,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                },
            )

        def log_message(self, fmt, *args):
            sys.stderr.write("gcp-fake: " + (fmt % args) + "\n")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--sa-out", help="write a service-account key file for this fake here")
    args = ap.parse_args()
    with open(args.state) as f:
        state = json.load(f)
    public_key, key_id, email = None, None, "envrun-test@proj.iam.gserviceaccount.com"
    if args.sa_out:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_key = key.public_key()
        key_id = hashlib.sha1(
            public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        sa = {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"http://127.0.0.1:{args.port}/token",
            "universe_domain": "googleapis.com",
        }
        tmp = args.sa_out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(sa, f)
        os.rename(tmp, args.sa_out)
    server = ThreadingHTTPServer
    server.request_queue_size = 256
    httpd = server(("127.0.0.1", args.port), handler(Fake(state, public_key, key_id, email)))
    httpd.daemon_threads = True
    httpd.serve_forever()


if __name__ == "__main__":
    main()
