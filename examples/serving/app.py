"""A small HTTP inference service for the sample loan-default model, guarded by mqm.

    python examples/serving/app.py --monitor-url http://127.0.0.1:8080 --flag-source flags/

``POST /predict`` takes one JSON object of the model's features (``schemas/loan_default.yaml``)
and answers ``{"prediction": 0|1, "served_by": "model"|"fallback", "reason": null|"flag"|
"error"|...}``. The model is called through ``guard``: while the monitor's fallback flag is
on (read every ``--flag-ttl`` seconds from ``--flag-source``, a directory of flag files or
the monitor's URL) the answer is the default prediction, and every call is logged to the
monitor (``mqm serve``, over HTTP) with ``InferenceLogger``: the model's own prediction and
probabilities (a shadow call while the flag is on) and the request's ``X-Request-Id``, which
labels join on. ``GET /status`` shows the flag, the guard's and the logger's counts.

Nothing here waits on the monitor: the flag is read in the background and the logger posts
in the background, so a monitor that is down changes nothing for callers.

Settings are command-line options, each with an environment variable as its default (see
``--help``). Only the standard library and ``mqm_client`` are imported: it runs with the
client alone (``pip install clients/python``) and starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loan_model import MODEL_VERSION, predict_proba  # next to this file (sys.path[0])

from mqm_client import FallbackFlag, InferenceLogger, guard

MODEL = "loan_default"
MAX_BODY = 64 * 1024  # one request's features are a few hundred bytes

# The request being answered: its X-Request-Id and (test hook) X-Timestamp, set by the
# handler, read by guard when it logs the call (the shadow call gets the context too).
REQUEST: contextvars.ContextVar[tuple[str | None, float | None]] = contextvars.ContextVar(
    "request", default=(None, None))


def score(features: Mapping[str, Any]) -> dict[str, Any]:
    """The model's answer with its class probabilities, as the reference set holds them."""
    p1 = predict_proba(features)
    return {"prediction": int(p1 >= 0.5), "probabilities": {"0": round(1 - p1, 6), "1": p1}}


class Service:
    """The guarded model, its flag and its logger."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.flag = FallbackFlag(MODEL, args.flag_source or None, ttl=args.flag_ttl)
        self.logger = InferenceLogger(MODEL, args.monitor_url, token=args.token,
                                      model_version=MODEL_VERSION)
        # No --default: the default is the flag document's default_prediction, i.e. the
        # monitor's config (fallback.default_prediction).
        default = {} if args.default is None else {"default": json.loads(args.default)}
        self.predict = guard(
            score, flag=self.flag, logger=self.logger,
            # What the monitor needs beyond the features: the id labels join on, and the
            # probabilities its estimated accuracy and ROC AUC are computed from.
            request_id=lambda features: REQUEST.get()[0],
            timestamp=lambda features: REQUEST.get()[1],
            prediction=lambda answer: answer["prediction"],
            probabilities=lambda answer: answer["probabilities"],
            max_shadow_in_flight=args.max_shadow_in_flight, **default)
        self.trust_timestamp = args.trust_timestamp_header

    def answer(self, features: dict[str, Any], request_id: str | None,
               timestamp: float | None) -> dict[str, Any]:
        token = REQUEST.set((request_id, timestamp))
        try:
            result = self.predict(features)
        finally:
            REQUEST.reset(token)
        path = self.predict.last_path()
        if path == "model":
            return {"prediction": result["prediction"], "served_by": "model", "reason": None}
        return {"prediction": result, "served_by": "fallback", "reason": path}

    def status(self) -> dict[str, Any]:
        return {"model": MODEL, "model_version": MODEL_VERSION, "flag": asdict(self.flag.state()),
                "guard": self.predict.stats(), "logger": self.logger.stats()}

    def close(self) -> None:
        self.flag.close()
        self.logger.close()  # writes what is still queued


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            if self.path != "/predict":
                self.reply(404, {"error": f"no such endpoint: POST {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:  # a negative length would read until the client hangs up
                self.close_connection = True
                self.reply(400, {"error": "Content-Length must be a number of bytes"})
                return
            if length > MAX_BODY:
                self.close_connection = True  # the unread body would be taken as a request
                self.reply(413, {"error": f"body over {MAX_BODY} bytes"})
                return
            try:
                features = json.loads(self.rfile.read(length))
                timestamp = self.timestamp()
            except (ValueError, RecursionError) as exc:  # not JSON, or nested too deep
                self.reply(400, {"error": str(exc).splitlines()[0]})
                return
            if not isinstance(features, dict):
                self.reply(400, {"error": "the body must be a JSON object of features"})
                return
            try:
                body = service.answer(features, self.headers.get("X-Request-Id"), timestamp)
            except Exception as exc:  # the model failed and there is no default to serve
                self.reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self.reply(200, body)

        def do_GET(self) -> None:
            if self.path == "/status":
                self.reply(200, service.status())
            else:
                self.reply(404, {"error": f"no such endpoint: GET {self.path}"})

        def timestamp(self) -> float | None:
            """The log time from ``X-Timestamp`` (epoch seconds), if trusted.

            A test hook, off by default: it lets a test place traffic in past check
            windows. A real service logs the time it answered.
            """
            value = self.headers.get("X-Timestamp")
            if value is None or not service.trust_timestamp:
                return None
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"X-Timestamp must be epoch seconds, got {value!r}") from None

        def reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no line per request; /status has the counts

    return Handler


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monitor-url", default=env("MQM_MONITOR_URL"),
                        help="the monitor, where predictions are logged: mqm serve's URL "
                             "http://host:port (or, with the full mqm install, its database "
                             "URL) (default: $MQM_MONITOR_URL)")
    parser.add_argument("--token", default=env("MQM_INGEST_TOKEN"),
                        help="the monitor's ingest token, to post logs "
                             "(default: $MQM_INGEST_TOKEN)")
    parser.add_argument("--flag-source", default=env("SERVING_FLAG_SOURCE"),
                        help="the monitor's fallback_dir, or its URL http://host:port "
                             "(default: $SERVING_FLAG_SOURCE; none: only $MQM_FORCE_FALLBACK)")
    parser.add_argument("--flag-ttl", type=float, default=float(env("SERVING_FLAG_TTL", "5")),
                        help="seconds between reads of the flag (default: $SERVING_FLAG_TTL or 5)")
    parser.add_argument("--default", default=env("SERVING_DEFAULT"),
                        help="the default prediction as JSON, e.g. 0 (default: "
                             "$SERVING_DEFAULT, else the flag document's default_prediction)")
    parser.add_argument("--max-shadow-in-flight", type=int, default=4,
                        help="model calls run in the background at once while the flag is "
                             "on, so that their predictions are logged (default: 4)")
    parser.add_argument("--host", default=env("SERVING_HOST", "127.0.0.1"),
                        help="address to listen on (default: $SERVING_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("SERVING_PORT", "8000")),
                        help="port; 0 picks a free one (default: $SERVING_PORT or 8000)")
    parser.add_argument("--trust-timestamp-header", action="store_true",
                        help="log X-Timestamp (epoch seconds) as the inference time: a test "
                             "hook to place traffic in past check windows")
    args = parser.parse_args(argv)
    if not args.monitor_url:
        parser.error("no monitor: pass --monitor-url or set MQM_MONITOR_URL")
    if args.flag_ttl <= 0 or args.max_shadow_in_flight < 1:
        parser.error("--flag-ttl must be positive and --max-shadow-in-flight at least 1")
    if args.default is not None:
        try:
            json.loads(args.default)
        except ValueError:
            parser.error(f"--default must be JSON, got {args.default!r}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    service = Service(args)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(service))
    server.daemon_threads = True

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # leaves serve_forever; the finally below flushes the logs

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"serving {MODEL} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
        print(f"stopped; logger: {service.logger.stats()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
