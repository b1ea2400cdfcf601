"""The TLS proxy in front of the API (nginx from the distribution): its configuration, rendered here.

The API (gunicorn) listens on the orchestrator's loopback only; nginx is the
one public port: TLS with the cluster's certificate (deploy.tls), the job
routes and /healthz passed through (the API asks for the key on every job
route), everything else (metrics, readiness) kept off the Internet. Its own
errors are JSON, as the API's are.
"""
from __future__ import annotations

import json

from inferq.deploy.inventory import Inventory

PUBLIC_ROUTES = r"^/(jobs|jobs/[^/]+|new_request|healthz|openapi\.json)$"
"""What the public port serves: submitting and reading jobs (the API key required), liveness, the API's description."""

BODY_SLACK = 64 * 1024
"""nginx lets bodies this much past the API's own limit through, so the API answers those with its own 413."""


def error(code: str, message: str) -> str:
    """A JSON error body as an nginx string literal."""
    return "'" + json.dumps({"error": code, "message": message}).replace("'", "\\'") + "\\n'"


def nginx_conf(inventory: Inventory, run_dir: str, cert: str, key: str, user: str, max_body: int,
               max_wait: float) -> str:
    """nginx.conf: TLS on the public port, proxying the public routes to the API on loopback."""
    body = max_body + BODY_SLACK
    return f"""# inferq's TLS proxy (written by fab deploy): the API's only public port.
user {user};
worker_processes auto;
pid {run_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    # Bodies and answers stay in memory (the API's limit is small): no temporary files.
    client_max_body_size {body};
    client_body_buffer_size {body};
    proxy_max_temp_file_size 0;
    client_body_temp_path {run_dir}/body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    upstream inferq_api {{
        server 127.0.0.1:{inventory.api_port};
        keepalive 16;
    }}
    server {{
        listen {inventory.https_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:inferq:1m;
        default_type application/json;
        error_page 413 @too_large;
        error_page 502 504 =503 @api_down;
        location ~ {PUBLIC_ROUTES} {{
            proxy_pass http://inferq_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            # GET /jobs/<id>?wait=N holds the request up to the API's longest wait.
            proxy_read_timeout {int(max_wait) + 30}s;
        }}
        location / {{
            return 404 {error("not_found", "not on the public port: /jobs, /new_request, /healthz, /openapi.json")};
        }}
        location @too_large {{
            return 413 {error("body_too_large", f"request body exceeds {max_body} bytes; send fewer or shorter texts")};
        }}
        location @api_down {{
            add_header Retry-After 1 always;
            return 503 {error("api_unavailable", "the API is restarting or down; retry shortly")};
        }}
    }}
}}
"""
