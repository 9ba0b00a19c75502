"""vita serve --replicas 2 under Ray Serve, on a Ray cluster this test starts on 127.0.0.1.

The cluster is a real `ray start --head` (the README's multi-node command, one node here); `vita serve`
joins it with --ray-address as on a second machine. Requests go through Ray's HTTP proxy, driven by
the official openai client; the x-vita-replica header shows both replicas answered.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from test_serve import free_port, library_wav, speak
from vita_cli.main import app
from vita_core.errors import InputError
from vita_core.speech import load_speech_model
from vita_server.ray_app import REPLICA_HEADER, ReplicaSpec, deployment, portable

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VITA_", "RAY_"))}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}


@contextmanager
def ray_head():
    """`ray start --head --block` on 127.0.0.1 (2 CPUs, no dashboard, its own temp dir); yields its address.

    Ended by SIGTERM to that one process, which stops the Ray processes it started (none are left).
    """
    port = free_port()
    temp = tempfile.mkdtemp(prefix="vray", dir="/tmp")  # short: Ray's unix sockets live under it
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        out = head.communicate(timeout=60)[0]
        assert head.returncode is not None, out


def wait_healthy(proc: subprocess.Popen, base: str, seconds: float = 240) -> None:
    """Until the proxy routes /health to a replica (it answers 404 before the app is deployed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("the replicas did not come up")


@pytest.fixture(scope="module")
def ray_address():
    with ray_head() as address:
        yield address


def test_two_replicas_under_ray_serve_answer_speech(tiny_checkpoint_f32, decoder_dir, clean_speech_env, ray_address):
    speech = load_speech_model(tiny_checkpoint_f32, None, decoder_dir, device="cpu", need_decoder=True)
    expected = library_wav(speech)[0]
    model_id, port = tiny_checkpoint_f32.name, free_port()
    base = f"http://127.0.0.1:{port}"
    # the decoder folder comes from vita serve's environment only: the replicas get it from the driver
    proc = subprocess.Popen([sys.executable, "-m", "vita_cli", "serve", "--model", str(tiny_checkpoint_f32),
                             "--device", "cpu", "--port", str(port), "--replicas", "2",
                             "--ray-address", ray_address],
                            env=_env(VITA_AUDIO_DECODER=str(decoder_dir)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(proc, base)
        health = httpx.get(f"{base}/health")
        assert health.json() == {"status": "ok", "model": model_id} and health.headers[REPLICA_HEADER]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        replicas = set()
        with ThreadPoolExecutor(4) as pool:
            for _ in range(6):  # Ray routes each request to the less busy of two replicas it samples
                for headers, data in pool.map(lambda _i: speak(client, model_id), range(4)):
                    assert headers["content-type"] == "audio/wav"
                    # the same codes as vita_core gives (floats may differ across processes)
                    assert data[:44] == expected[:44] and len(data) == len(expected)
                    replicas.add(headers[REPLICA_HEADER])
                if len(replicas) == 2:
                    break
        assert len(replicas) == 2
        missing = httpx.post(f"{base}/v1/audio/speech", json={"model": "nope", "input": "Hi.", "voice": "x"})
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: vita deletes its app from the cluster and exits
        out = proc.communicate(timeout=90)[0]
    assert proc.returncode == 0, out
    assert f"serving 2 replica(s) on {base} through Ray Serve" in " ".join(out.split())


def test_a_replica_whose_model_does_not_load_is_one_line_naming_why(tiny_checkpoint_f32, decoder_dir, tmp_path,
                                                                   clean_speech_env, ray_address):
    import shutil

    bad = shutil.copytree(tiny_checkpoint_f32, tmp_path / "truncated")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the driver's folder checks pass; the replicas' load fails
    proc = subprocess.run([sys.executable, "-m", "vita_cli", "serve", "--model", str(bad), "--device", "cpu",
                           "--port", str(free_port()), "--replicas", "1", "--ray-address", ray_address],
                          env=_env(VITA_AUDIO_DECODER=str(decoder_dir)), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = " ".join(proc.stderr.splitlines()[-1:])
    assert error.startswith("error: the Ray replicas did not start") and f"cannot read {weights}" in error, proc.stderr


def test_replica_flags_are_checked_before_ray_starts(tiny_checkpoint_f32, decoder_dir, no_model_load):
    runner = CliRunner()
    base = ["serve", "--model", str(tiny_checkpoint_f32), "--decoder-dir", str(decoder_dir)]
    r = runner.invoke(app, [*base, "--replicas", "0"])
    assert r.exit_code == 1 and "--replicas 0 must be at least 1" in r.stderr
    r = runner.invoke(app, [*base, "--ray-address", "auto"])
    assert r.exit_code == 1 and "--ray-address needs --replicas" in r.stderr
    r = runner.invoke(app, [*base, "--replicas", "2", "--replica-cpus", "-1"])
    assert r.exit_code == 1 and "must not be negative" in r.stderr
    r = runner.invoke(app, ["serve", "--model", str(tiny_checkpoint_f32), "--decoder-dir", "/nonexistent/dec",
                            "--replicas", "2"])
    assert r.exit_code == 1 and "/nonexistent/dec" in r.stderr


def test_replica_spec_makes_local_folders_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dec").mkdir()
    assert portable("dec") == str(tmp_path / "dec") and portable("vita-mini") == "vita-mini"
    assert portable(None) is None
    spec = ReplicaSpec(model="vita-mini", decoder_dir=portable("dec"), max_queue=3)
    with pytest.raises(InputError, match="--replicas 0"):
        deployment(spec, 0)
    bound = deployment(spec, 2, cpus=0.5)._bound_deployment
    assert (bound.name, bound.num_replicas, bound.max_ongoing_requests) == ("vita", 2, 3)
    assert bound.ray_actor_options == {"num_cpus": 0.5, "num_gpus": 0.0}
