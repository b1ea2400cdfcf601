"""``inferq``: the command-line client. Submit a text or a file of texts, show a job, fetch its result.

Exit status: 0 done, 1 a job failed or the API refused the request,
3 the API cannot be reached at any of its addresses (or an address showed a
certificate other than its pinned one), 4 a job was not finished in time
(2 is a usage error, as argparse does it).
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import IO

from tqdm import tqdm

from inferq.client.api import ApiRefused, ApiUnreachable, CertificateRefused, Client

EXIT_FAILED, EXIT_UNREACHABLE, EXIT_NOT_DONE = 1, 3, 4

DEFAULT_TEXTS_PER_JOB = 16
"""Texts per bulk job when the API's OpenAPI document does not give its limit."""


def _print_json(body: dict, out: IO[str]) -> None:
    out.write(json.dumps(body, ensure_ascii=False) + "\n")


def _status_code(body: dict) -> int:
    status = body.get("status")
    return 0 if status == "succeeded" else EXIT_FAILED if status in ("failed", "cancelled") else EXIT_NOT_DONE


def cmd_submit(client: Client, args) -> int:
    """Submit one text; print its id, or with --wait its result (one request when it is done in time)."""
    if args.wait <= 0:
        print(client.submit(args.text))
        return 0
    body = client.submit_and_wait(args.text, args.wait)
    _print_json(body, sys.stdout)
    return _status_code(body)


def result_line(number: int, text: str, body: dict, index: int = 0) -> dict:
    """One JSON line of submit-file's output: the input line, its job and its outcome (index: its place in the job)."""
    line = {"line": number, "text": text, "job_id": body.get("job_id"), "status": body.get("status")}
    if body.get("status") == "succeeded":
        line.update(body["results"][index])
    elif "error" in body:
        line["error"] = body["error"]
    return line


def cmd_submit_file(client: Client, args) -> int:
    """Submit the non-empty lines of a file as bulk jobs; write each line's result as a JSON line, in input order."""
    with open(args.file, encoding="utf-8") as f:
        lines = [(n, line.rstrip("\n")) for n, line in enumerate(f, 1) if line.strip()]
    per_job = args.texts_per_job or client.max_texts_per_job() or DEFAULT_TEXTS_PER_JOB
    chunks = [lines[i:i + per_job] for i in range(0, len(lines), per_job)]

    def one(chunk: list[tuple[int, str]]) -> list[dict]:
        texts = [text for _, text in chunk]
        try:
            body = client.submit_and_wait(texts, args.timeout)
        except ApiRefused as exc:
            body = {"job_id": None, "status": "refused", "error": {"code": exc.code, "message": exc.message}}
        return [result_line(number, text, body, i) for i, (number, text) in enumerate(chunk)]

    results: dict[int, dict] = {}
    # Each thread submits a job and waits for it, so up to --concurrency jobs are in flight.
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool, \
            tqdm(total=len(lines), unit="text", desc="texts", file=sys.stderr, disable=args.quiet) as bar:
        futures = [pool.submit(one, chunk) for chunk in chunks]
        for future in as_completed(futures):
            done = future.result()  # ApiUnreachable propagates: one line from main()
            results.update((line["line"], line) for line in done)
            bar.update(len(done))
            if any(line["status"] != "succeeded" for line in done):
                bar.set_postfix(not_succeeded=sum(r["status"] != "succeeded" for r in results.values()))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for number, _ in lines:
            _print_json(results[number], out)
    finally:
        if out is not sys.stdout:
            out.close()
    counts = {status: sum(r["status"] == status for r in results.values())
              for status in ("succeeded", "failed", "refused", "queued", "running")}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    print(f"{len(lines)} texts in {len(chunks)} job{'s' if len(chunks) != 1 else ''}: {summary}"
          + (f"; results in {args.output}" if args.output else ""), file=sys.stderr)
    if counts["failed"] or counts["refused"]:
        return EXIT_FAILED
    return 0 if counts["succeeded"] == len(lines) else EXIT_NOT_DONE


def cmd_status(client: Client, args) -> int:
    """Print a job's status (queued, running, succeeded, failed)."""
    body = client.job(args.job_id)
    print(f"{body['job_id']} {body['status']}")
    return 0


def cmd_cancel(client: Client, args) -> int:
    """Cancel a job: print "<id> cancelled" (it will not run) or "<id> cancel_requested" (running: discarded)."""
    body = client.cancel(args.job_id)
    print(f"{body['job_id']} {body['status']}")
    return 0


def cmd_result(client: Client, args) -> int:
    """Print a job's state as JSON, waiting up to --wait seconds for it to finish."""
    body = client.wait(args.job_id, args.wait) if args.wait > 0 else client.job(args.job_id)
    _print_json(body, sys.stdout)
    return _status_code(body)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    from inferq import settings as inferq_settings  # by module: Client here names the HTTP client

    settings = inferq_settings.current(inferq_settings.Client)  # the client's own: no server setting can stop it
    p = argparse.ArgumentParser(prog="inferq", description=__doc__.splitlines()[0])
    p.add_argument("--api", action="append", metavar="URL",
                   help="the API's base URL; repeat it (or separate URLs with commas) for several addresses of "
                        "one cluster: a request goes to the one that answered last, and to the next when an "
                        f"address does not answer or answers 502/503/504 (default: INFERQ_API_URL, else "
                        f"{settings.url})")
    p.add_argument("--api-key", default=settings.api_key,
                   help="API key to send, when the API requires one (default: INFERQ_API_KEY)")
    p.add_argument("--api-cert-sha256", action="append", metavar="FINGERPRINT",
                   help="accept only the TLS certificate with this SHA-256 fingerprint; with several --api, "
                        "one per address in the same order (empty: none pinned) or one for all (default: "
                        "INFERQ_API_CERT_SHA256, commas between fingerprints)")
    p.add_argument("--http-timeout", type=float, default=10.0, help="seconds to wait for each HTTP answer")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit one text; print its job id (or its result with --wait)")
    s.add_argument("text")
    s.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait for the result and print it")
    s.set_defaults(run=cmd_submit)

    f = sub.add_parser("submit-file", help="submit the lines of a file as bulk jobs; write results as JSON lines "
                                           "in input order")
    f.add_argument("file")
    f.add_argument("-o", "--output", help="write the JSON lines here (default: stdout)")
    f.add_argument("--texts-per-job", type=int, default=0, metavar="N",
                   help="lines per bulk job (default: the most the API accepts, from its /openapi.json)")
    f.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once (default: %(default)s)")
    f.add_argument("--timeout", type=float, default=300, metavar="SECONDS", help="longest wait for each job")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(run=cmd_submit_file)

    st = sub.add_parser("status", help="print a job's status")
    st.add_argument("job_id")
    st.set_defaults(run=cmd_status)

    c = sub.add_parser("cancel", help="cancel a job (queued: it never runs; running: its result is discarded)")
    c.add_argument("job_id")
    c.set_defaults(run=cmd_cancel)

    r = sub.add_parser("result", help="print a job's result as JSON")
    r.add_argument("job_id")
    r.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for it to finish")
    r.set_defaults(run=cmd_result)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the client; errors are one line on stderr, never a traceback."""
    args = parser().parse_args(argv)
    if getattr(args, "concurrency", 1) < 1:
        print("inferq: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "texts_per_job", 0) < 0:
        print("inferq: --texts-per-job must be at least 1 (0: the API's limit)", file=sys.stderr)
        return 2
    from inferq import settings as inferq_settings

    settings = inferq_settings.current(inferq_settings.Client)
    try:
        client = Client(args.api or settings.urls, args.api_key, timeout=args.http_timeout,
                        cert_sha256=args.api_cert_sha256 or settings.api_cert_sha256)
    except ValueError as exc:
        print(f"inferq: --api / --api-cert-sha256: {exc}", file=sys.stderr)
        return 2
    try:
        return args.run(client, args)
    except CertificateRefused as exc:
        print(f"inferq: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiUnreachable as exc:
        print(f"inferq: {exc}; is the stack running (make run)? set --api or INFERQ_API_URL", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiRefused as exc:
        print(f"inferq: the API refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"inferq: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("inferq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
