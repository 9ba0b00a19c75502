"""`vita serve --replicas N`: the same FastAPI app as a Ray Serve deployment, one loaded model per replica.

Ray Serve does the distributing (its HTTP proxy on every node, routing to the least busy replica,
replicas placed on any node of the cluster) so vita needs no balancer of its own. Each replica builds
the app in its own process with `create_app` from the folders `vita serve` was given, and tags every
answer with an `x-vita-replica` header, so a client (and the test) can see which replica served it.
Needs the ray extra: pip install 'vita[ray]'.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vita_core.errors import InputError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve import Application
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_NAME = "vita"
REPLICA_HEADER = "x-vita-replica"


@dataclass(frozen=True)
class ReplicaSpec:
    """What each replica loads and how it serves: `vita serve`'s flags, with local folders made absolute."""

    model: str | None = None
    tokenizer_dir: str | None = None
    decoder_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    mode: str | None = None
    need_encoder: bool = False
    max_queue: int = 8
    max_upload_mb: float = 25.0
    request_timeout: float | None = None


def portable(folder: str | Path | None) -> str | None:
    """An existing local folder as an absolute path (replicas run elsewhere); names such as vita-mini as given."""
    if folder is None:
        return None
    path = Path(folder).expanduser()
    return str(path.resolve()) if path.exists() else str(folder)


class ReplicaHeader:
    """ASGI middleware adding `x-vita-replica: <id>` to every HTTP answer (streams untouched)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.replica)]
            await send(message)

        await self.app(scope, receive, tagged)


def build_replica_app(spec: ReplicaSpec) -> FastAPI:
    """Runs inside each replica: load the model as `vita serve` does and build its app."""
    from ray import serve

    from vita_core.speech import load_speech_model
    from vita_server.app import create_app

    speech = load_speech_model(spec.model, spec.tokenizer_dir, spec.decoder_dir, device=spec.device,
                               dtype=spec.dtype, mode=spec.mode, need_encoder=spec.need_encoder,
                               need_decoder=True, task="tts")
    app = create_app(speech, max_queue=spec.max_queue, max_upload_mb=spec.max_upload_mb,
                     request_timeout=spec.request_timeout)
    app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
    return app


def deployment(spec: ReplicaSpec, replicas: int, cpus: float = 1.0, gpus: float = 0.0) -> Application:
    """The Ray Serve application: `replicas` copies of the app, each reserving `cpus` CPUs and `gpus` GPUs.

    Ray sends a replica at most `max_queue` requests at once (its own queue never overflows) and keeps
    up to `max_queue` more waiting at the proxy; past that Ray answers 503. A replica whose model fails
    to load is retried twice, not Ray's default twenty times: the same folders fail the same way, and
    the error then reaches the user in seconds instead of minutes.
    """
    from ray import serve

    if replicas < 1:
        raise InputError(f"--replicas {replicas} must be at least 1")
    if cpus < 0 or gpus < 0:
        raise InputError(f"--replica-cpus {cpus:g} and --replica-gpus {gpus:g} must not be negative")

    def build() -> FastAPI:
        return build_replica_app(spec)

    ingress = serve.ingress(build)()
    return serve.deployment(ingress, name=APP_NAME, num_replicas=replicas, max_ongoing_requests=spec.max_queue,
                            max_queued_requests=spec.max_queue, max_constructor_retry_count=2,
                            ray_actor_options={"num_cpus": cpus, "num_gpus": gpus}).bind()


def run(app: Application, address: str | None, host: str, port: int,
        ready: Callable[[], None] = lambda: None, stop: threading.Event | None = None) -> None:
    """Deploy `app` on the Ray cluster at `address` (None: a local one, started here) behind Ray's HTTP proxy
    on host:port, call `ready`, and serve until SIGINT/SIGTERM (or `stop` is set); then take it down.

    On a cluster vita did not start only the vita application is deleted; a local cluster is shut down.
    """
    import ray
    from ray import serve

    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, namespace="vita",
                 runtime_env={"env_vars": _vita_env()}, **({"_node_ip_address": "127.0.0.1"} if address is None else {}))
    except ConnectionError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc}); start it with ray start --head "
                         "or drop --ray-address for a local one") from None
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        # from the start: a signal while the replicas deploy (the proxy may already answer) ends the
        # service once deployed, cleanly; a second one interrupts at once
        def on_signal(*_: object) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:
            raise InputError(f"the Ray replicas did not start: {_replica_error(exc)} (ray logs: "
                             "/tmp/ray/session_latest/logs/serve)") from None
        ready()
        stop.wait()
    finally:
        if address is None:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
        ray.shutdown()


def _vita_env() -> dict[str, str]:
    """The driver's VITA_* variables, so replicas resolve folders and options as `vita serve` here does."""
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("VITA_")}


def _replica_error(exc: RuntimeError) -> str:
    """Why the replicas failed: the last line of the deployment's traceback (vita's own one-line error when
    the model did not load), else the first line of Ray's message."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    for dep in app.deployments.values() if app else ():
        lines = [line.strip() for line in dep.message.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return str(exc).splitlines()[0]
