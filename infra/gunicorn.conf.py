"""gunicorn settings for Batchline's web role."""

import multiprocessing
import os

bind = os.environ.get("BATCHLINE_BIND", "127.0.0.1:8000")
# One process per core, a few threads each: a request spends much of its time waiting on PostgreSQL and Redis, and
# a thread per connection keeps slow clients (tablets on plant Wi-Fi, keep-alive) from holding a whole process.
# Measured with tests/benchmarks/bench_step_entry.py on two cores: sync workers (4) answered the 50 tablets with a
# p99 near 1 s, 3 gthread workers did worse than 2, and 4 or 8 threads were alike; so 2 x 4 gthread.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = os.environ.get("WEB_WORKER_CLASS", "gthread")
# Tablets on plant Wi-Fi keep connections open between steps; keep-alive saves TLS handshakes at the proxy.
keepalive = 5
timeout = 60
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker):  # gunicorn calls it with the worker
    """Freeze what the loaded app holds (modules, mappers, the app itself) out of the garbage collector's sight.

    These objects live as long as the worker; without this, each full collection inside a request walks the
    300,000 of them (about 0.15 s measured on the ingest path), as `batchline worker` avoids the same way.
    """
    import gc

    gc.freeze()
