"""A real RFC 3161 Time Stamping Authority on loopback: OpenSSL's `openssl ts -reply` behind a tiny HTTP server.

A throwaway CA and a TSA certificate (critical extendedKeyUsage timeStamping) are generated into a temporary
directory; each POSTed query is answered by running `openssl ts -reply` on it.
"""

from __future__ import annotations

import subprocess
import tempfile
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType


def _openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, check=True).stdout


def make_tsa_pki(directory: Path) -> None:
    """Write ca.crt/ca.key, tsa.crt/tsa.key and the `openssl ts` config into `directory`."""
    (directory / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    (directory / "tsa.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
        "extendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=Batchline Test Root CA", "-extensions", "v3_ca", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *key, "-keyout", "tsa.key", "-out", "tsa.csr",
             "-subj", "/CN=Batchline Test TSA", cwd=directory)
    _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "tsa.crt", "-days", "2", "-extfile", "tsa.ext", cwd=directory)
    (directory / "tsaserial").write_text("01\n")
    (directory / "tsa.cnf").write_text(textwrap.dedent(f"""
        [ tsa ]
        default_tsa = tsa_config
        [ tsa_config ]
        dir = {directory}
        serial = $dir/tsaserial
        crypto_device = builtin
        signer_cert = $dir/tsa.crt
        signer_key = $dir/tsa.key
        signer_digest = sha256
        default_policy = 1.3.6.1.4.1.99999.1
        digests = sha256, sha384, sha512
        accuracy = secs:1
        ordering = yes
        tsa_name = yes
        ess_cert_id_chain = no
        ess_cert_id_alg = sha256
    """))


class LoopbackTSA:
    """Run the TSA on 127.0.0.1:<free port> for the duration of a `with` block."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="batchline-tsa-")
        self.directory = Path(self._tmp.name)
        self.requests = 0
        self.fail = False  # tests flip this to simulate an outage
        self._lock = threading.Lock()  # openssl ts increments one serial file
        make_tsa_pki(self.directory)
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if tsa.fail:
                    self.send_error(503, "TSA down for the test")
                    return
                with tsa._lock:
                    tsa.requests += 1
                    (tsa.directory / "query.tsq").write_bytes(query)
                    reply = _openssl("ts", "-reply", "-config", "tsa.cnf", "-queryfile", "query.tsq",
                                     cwd=tsa.directory)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/tsa"

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.crt")

    def __enter__(self) -> LoopbackTSA:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._tmp.cleanup()
