"""gunicorn settings for Batchline's web role."""

import multiprocessing
import os

bind = os.environ.get("BATCHLINE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# Tablets on plant Wi-Fi keep connections open between steps; keep-alive saves TLS handshakes at the proxy.
keepalive = 5
timeout = 60
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
