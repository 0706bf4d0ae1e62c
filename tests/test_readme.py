"""The README's install section and quick start, run as a new user would run them.

Everything run here is read from README.md itself, so the two cannot drift apart: the
install commands (with ``path/to/stream-gateway`` pointing at this checkout), ``app.py``
from the quick start, its ``uvicorn`` command and its curl commands, in a temporary
directory with a fresh virtualenv. pip may fetch the dependencies from the package index.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "path/to/stream-gateway"
README_ADDRESS = "127.0.0.1:8000"
START_TIMEOUT = 60.0  # against hangs only: a loaded machine may take long to start


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match is not None, f"README.md has no '## {title}' section"
    return match.group(1)


def fenced(text: str, language: str) -> list[str]:
    """The contents of the fenced code blocks of ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def commands(block: str) -> list[str]:
    """The shell commands of a block, backslash-continued lines joined, comments left out."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(venv: Path, workdir: Path, command: str) -> Iterator[str]:
    """Run the README's uvicorn command from ``venv`` on a free loopback port; yield
    its address; stop it by its PID."""
    argv = shlex.split(command, comments=True)
    assert argv[0] == "uvicorn", command
    for _ in range(3):  # another process may take the port between probe and bind
        port = free_port()
        log = workdir / f"uvicorn-{port}.log"
        with log.open("wb") as out:
            where = ["--host", "127.0.0.1", "--port", str(port)]
            server = subprocess.Popen(
                [str(venv / "bin" / "uvicorn"), *argv[1:], *where],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if wait_until_listening(server, port):
                yield f"127.0.0.1:{port}"
                return
            if b"address already in use" not in log.read_bytes().lower():
                pytest.fail(f"uvicorn did not start:\n{log.read_text()}")
        finally:
            stop(server)
    pytest.fail("no free port for uvicorn after 3 tries")


def wait_until_listening(server: subprocess.Popen[bytes], port: int) -> bool:
    for _ in range(int(START_TIMEOUT / 0.1)):
        if server.poll() is not None:
            return False
        try:
            httpx.get(f"http://127.0.0.1:{port}/flows/", timeout=1.0)
            return True
        except httpx.TransportError:
            try:
                server.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
    pytest.fail(f"uvicorn did not listen on port {port} within {START_TIMEOUT} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def data_lines(output: str) -> list[object]:
    return [json.loads(line[6:]) for line in output.splitlines() if line.startswith("data: ")]


def sse_events(output: str) -> list[dict[str, object]]:
    """The SSE events of ``output`` as ``{"id"?, "event", "data"}`` (data parsed)."""
    events = []
    for block in output.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            data = json.loads(fields["data"])
            event: dict[str, object] = {"event": fields["event"], "data": data}
            if "id" in fields:
                event["id"] = int(fields["id"])
            events.append(event)
    return events


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    install, quick = section(readme, "Install"), section(readme, "Quick start")

    # Install the way the install section says, from this checkout (already cloned).
    steps = [c for c in commands(fenced(install, "sh")[0]) if not c.startswith("git clone")]
    assert any(PLACEHOLDER in step for step in steps), steps
    script = "set -e\n" + "\n".join(s.replace(PLACEHOLDER, str(ROOT)) for s in steps)
    run(script, tmp_path, {"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    venv = tmp_path / ".venv"
    assert (venv / "bin" / "uvicorn").exists(), "the server extra brings uvicorn"
    # The fresh venv imports the installed copy, not this checkout.
    where = run(
        f"{venv}/bin/python -c 'import stream_gateway; print(stream_gateway.__file__)'",
        tmp_path,
        {},
    )
    assert not where.startswith(str(ROOT / "stream_gateway")), where

    (app,) = fenced(quick, "python")
    (tmp_path / "app.py").write_text(app)
    serve_block, curl_block = fenced(quick, "sh")
    (serve,) = commands(serve_block)
    curls = commands(curl_block)
    assert not (tmp_path / ".data").exists()

    # The README's comment under the first curl shows frames the answer must contain.
    shown = [json.loads(frame) for frame in re.findall(r"data: (\{.*?\})(?= |$)", curl_block)]
    assert shown, "the README shows the frames the first curl prints"

    with serving(venv, tmp_path, serve) as address:
        env: dict[str, str] = {}

        def curl(command: str) -> str:
            return run(command.replace(README_ADDRESS, address), tmp_path, env)

        start, id_line, sse, resume, cancel = curls
        assert id_line.startswith("ID="), id_line
        started = curl(start)
        assert started.startswith("HTTP/1.1 200"), started
        header = re.search(r"^x-genkit-stream-id: (\S+)\r?$", started, re.M | re.I)
        assert header is not None, started
        env["ID"] = stream_id = header.group(1)
        tokens = ["Durable ", "streaming ", "survives ", "reloads. ", "You ", "asked: ", "hi"]
        frames = data_lines(started)
        assert frames == [{"message": t} for t in tokens] + [{"result": "".join(tokens)}]
        for frame in shown:
            assert frame in frames, f"README shows {frame}, the server sent {frames}"

        replay = sse_events(curl(sse))
        chunks = [{"id": i, "event": "chunk", "data": t} for i, t in enumerate(tokens)]
        result = {"event": "result", "data": "".join(tokens)}
        assert replay == [*chunks, result]

        resumed = sse_events(curl(resume))
        after = int(re.search(r"Last-Event-ID: (\d+)", resume).group(1))  # type: ignore[union-attr]
        assert resumed == [*chunks[after + 1 :], result]

        assert json.loads(curl(cancel)) == {"streamId": stream_id, "cancelled": False}
    assert (tmp_path / ".data" / "streams.db").is_file()

    # "stop uvicorn, start it again, and the replay still works"
    with serving(venv, tmp_path, serve) as address:
        assert sse_events(curl(sse)) == [*chunks, result]


def test_readme_sections_are_where_the_test_looks() -> None:
    # Fails fast (without building a venv) when the README's shape changes.
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("# stream-gateway\n\n```sh\nmake demo")
    assert "make test" in fenced(readme, "sh")[0]
    install, quick = section(readme, "Install"), section(readme, "Quick start")
    assert "[server]" in fenced(install, "sh")[0]
    assert len(fenced(quick, "python")) == 1 and len(fenced(quick, "sh")) == 2
