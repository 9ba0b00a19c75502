"""`vita serve`: load the speech model once and answer OpenAI's audio API on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from vita_cli import speech_options as opt
from vita_cli.common import err_console, handle_errors
from vita_cli.main import app


def _check_port(host: str, port: int) -> None:
    """Fail before the slow model load when the address cannot be listened on."""
    from vita_core.errors import InputError

    if not 1 <= port <= 65535:
        raise InputError(f"--port {port} must be in 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def _hears(tokenizer_dir: Optional[Path]) -> bool:
    """Whether a speech tokenizer is configured (flag, env or config file), so /v1/audio/transcriptions works.

    None configured serves speech only; one that is not a folder fails here with resolve_folder's message.
    """
    from vita_core.errors import InputError
    from vita_core.speech import resolve_folder

    try:
        resolve_folder("audio_tokenizer", tokenizer_dir)
    except InputError:
        return False
    return True


@app.command()
@handle_errors
def serve(
    model: Optional[Path] = opt.MODEL,
    decoder_dir: Optional[Path] = opt.DECODER_DIR,
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    mode: Optional[str] = opt.MODE,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep 127.0.0.1: there is no auth)."),
    port: int = typer.Option(8000, "--port", help="TCP port to listen on."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests running or waiting for the model; "
                                  "more are answered 503 with Retry-After."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Largest audio upload (413 above it)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Seconds one request may take, "
                                                    "waiting included (504, or a stream cut short, past it)."),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="Serve N replicas under Ray Serve, each with "
                                           "its own model, behind Ray's HTTP proxy (needs 'vita[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --replicas: the Ray cluster "
                                              "(auto, or HEAD:6379 of `ray start --head`); default: a local one."),
    replica_cpus: float = typer.Option(1.0, "--replica-cpus", help="With --replicas: CPUs Ray reserves per replica."),
    replica_gpus: float = typer.Option(0.0, "--replica-gpus", help="With --replicas: GPUs per replica "
                                       "(1 with --device cuda)."),
) -> None:
    """Serve the speech model over OpenAI's API: GET /health, GET /v1/models, POST /v1/audio/speech,
    POST /v1/chat/completions (text + audio answers, streamed as SSE), and with a speech tokenizer
    (--tokenizer-dir, env or config file) POST /v1/audio/transcriptions, input_audio parts and the
    WebSocket /v1/realtime (OpenAI's Realtime events: server VAD, barge-in, vita's stage timings).

    Example: vita serve --model vita-tiny --decoder-dir glm-4-voice-decoder --port 8000;
    curl -s localhost:8000/v1/audio/speech -H 'Content-Type: application/json'
    -d '{"model": "vita-tiny", "input": "Hello.", "voice": "default"}' -o hello.wav

    With --replicas N the same app runs as a Ray Serve deployment of N replicas (one model each) on a
    local Ray instance, or on the cluster --ray-address names (every answer names its replica in the
    x-vita-replica header).
    """
    from vita_core.errors import InputError
    from vita_core.speech import check_generation_flags, load_speech_model

    try:
        import uvicorn

        from vita_server.app import check_limits, create_app
    except ImportError as exc:
        raise InputError(f"vita serve needs the serve extra ({exc.name} is missing): pip install 'vita[serve]'") from None
    check_generation_flags(mode, device=device, dtype=dtype)
    check_limits(max_queue, max_upload_mb, request_timeout)
    _check_port(host, port)
    if replicas is not None or ray_address is not None:
        _serve_ray(model, decoder_dir, tokenizer_dir, device, dtype, mode, host, port, max_queue, max_upload_mb,
                   request_timeout, replicas, ray_address, replica_cpus, replica_gpus)
        return
    speech = load_speech_model(model, tokenizer_dir, decoder_dir, device=device, dtype=dtype, mode=mode,
                               need_encoder=_hears(tokenizer_dir), need_decoder=True,
                               progress=opt.progress(False), task="tts", notice=opt.notice())
    server = create_app(speech, max_queue=max_queue, max_upload_mb=max_upload_mb,
                        request_timeout=request_timeout)
    err_console.log(f"serving {speech.folder.name} on http://{host}:{port} (Ctrl-C stops)")
    uvicorn.run(server, host=host, port=port, log_level="info")


def _serve_ray(model: Optional[Path], decoder_dir: Optional[Path], tokenizer_dir: Optional[Path], device: str,
               dtype: str, mode: Optional[str], host: str, port: int, max_queue: int, max_upload_mb: float,
               request_timeout: Optional[float], replicas: Optional[int], ray_address: Optional[str],
               replica_cpus: float, replica_gpus: float) -> None:
    """`vita serve --replicas N`: the folders are checked here, each replica loads the model itself."""
    from vita_core.errors import InputError
    from vita_core.speech import resolve_folder, resolve_model

    if replicas is None:
        raise InputError("--ray-address needs --replicas N: say how many replicas to run")
    try:
        import ray.serve  # noqa: F401 - only to say early that the extra is missing
    except ImportError as exc:
        raise InputError(f"vita serve --replicas needs the ray extra ({exc.name} is missing): "
                         "pip install 'vita[ray]'") from None
    from vita_server import ray_app

    resolve_model(model)
    for key, given in (("audio_tokenizer", tokenizer_dir), ("audio_decoder", decoder_dir)):
        if given is not None:
            resolve_folder(key, given)
    spec = ray_app.ReplicaSpec(model=ray_app.portable(model), tokenizer_dir=ray_app.portable(tokenizer_dir),
                               decoder_dir=ray_app.portable(decoder_dir), device=device, dtype=dtype, mode=mode,
                               need_encoder=_hears(tokenizer_dir), max_queue=max_queue, max_upload_mb=max_upload_mb,
                               request_timeout=request_timeout)
    app = ray_app.deployment(spec, replicas, replica_cpus, replica_gpus)
    where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray instance"
    err_console.log(f"starting {replicas} replica(s) on {where}")
    ray_app.run(app, ray_address, host, port, ready=lambda: err_console.log(
        f"serving {replicas} replica(s) on http://{host}:{port} through Ray Serve (Ctrl-C stops)"))
