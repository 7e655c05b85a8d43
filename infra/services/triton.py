"""NVIDIA Triton Inference Server on CPU, from the ``tritonserver`` binary inside the ``nvidia-pytriton`` wheel.

The wheel is unpacked into the cache instead of installed: only the server binary, its libraries and the Python
backend are needed. Models run in their own environment (``settings.triton_python``, built from
``triton_models/cpu/requirements.txt``), as they would in a Triton container: the backend stub of this Triton
needs ``numpy<2``, and torch and model weights stay out of the I/O-bound workers. The stub finds that environment
through ``python3`` on ``PATH`` and must load the same ``libpython`` its interpreter was built with.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from infra.services._process import Launch, Service, ServiceError

_SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"
_FATAL_MARKERS = (
    "Failed to preinitialize Python stub",
    "failed to load",
    "Failed to load",
    "Traceback (most recent call last)",
)


def _extract_with_modes(wheel: Path, target: Path) -> None:
    """``zipfile`` drops Unix permissions; the binaries need their executable bits back."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            path = Path(archive.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)


def _mapped_files() -> set[str]:
    """Files some live process has mapped or open; those shared-memory regions are still in use."""
    in_use: set[str] = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as handle:
                in_use.update(line.split(maxsplit=5)[-1].strip() for line in handle if "/dev/shm/" in line)
        except OSError:
            continue
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            for fd in os.listdir(fd_dir):
                target = os.readlink(os.path.join(fd_dir, fd))
                if target.startswith("/dev/shm/"):
                    in_use.add(target)
        except OSError:
            continue
    return in_use


def kill_stubs(backend_dir: Path) -> list[int]:
    """SIGKILL the Python-backend stub processes of this stack's Triton (their command line names its backend
    folder, which lies in the stack's data dir). When Triton itself was killed, its stubs outlive it, each holding a
    model's memory; nothing else names that folder, so no other process is touched."""
    marker = str(backend_dir)
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            len(argv) > 1
            and argv[0].endswith(b"triton_python_backend_stub")
            and any(marker.encode() in arg for arg in argv[1:])
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def remove_orphaned_shm() -> list[str]:
    """Remove Python-backend shared-memory regions no live process uses (left by fast or killed stops)."""
    in_use = _mapped_files()
    removed = []
    for region in glob.glob(_SHM_GLOB):
        if region not in in_use:
            try:
                os.unlink(region)
                removed.append(region)
            except FileNotFoundError:
                pass
    return removed


class Triton(Service):
    name = "triton"

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.triton_grpc_port}"

    def ports(self) -> Sequence[int]:
        ports = [self.settings.triton_http_port, self.settings.triton_grpc_port]
        if self.settings.triton_metrics:
            ports.append(self.settings.triton_metrics_port)
        return ports

    @property
    def dist(self) -> Path:
        return self.settings.cache_path / f"pytriton-{self.settings.pytriton_version}"

    @property
    def server_root(self) -> Path:
        return self.dist / "pytriton" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.settings.data_path / "triton" / "backends"

    def fetch_server(self) -> None:
        marker = self.dist / ".complete"
        if marker.exists():
            return
        wheels = self.settings.cache_path / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                "--only-binary=:all:", "-d", str(wheels),
                f"nvidia-pytriton=={self.settings.pytriton_version}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"triton: downloading nvidia-pytriton failed:\n{result.stderr[-3000:]}")
        found = sorted(wheels.glob(f"nvidia_pytriton-{self.settings.pytriton_version}-*.whl"))
        if not found:
            raise ServiceError(f"triton: no nvidia-pytriton {self.settings.pytriton_version} wheel in {wheels}")
        if self.dist.exists():
            shutil.rmtree(self.dist)
        _extract_with_modes(found[-1], self.dist)
        marker.write_text(found[-1].name)

    def layout_backend(self) -> None:
        """The Python backend directory: the backend library, its utils module and the stub for this Python."""
        stub_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.server_root / "python_backend_stubs" / stub_version / "triton_python_backend_stub"
        if not stub.exists():
            raise ServiceError(f"triton: the wheel has no Python backend stub for Python {stub_version}")
        python_dir = self.backend_dir / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        sources = {
            "libtriton_python.so": self.server_root / "backends" / "python" / "libtriton_python.so",
            "triton_python_backend_utils.py": self.server_root
            / "backends"
            / "python"
            / "triton_python_backend_utils.py",
            "triton_python_backend_stub": stub,
        }
        for name, source in sources.items():
            link = python_dir / name
            if link.is_symlink() or link.exists():
                if link.resolve() == source.resolve():
                    continue
                link.unlink()
            link.symlink_to(source)

    def _env_python_libdir(self) -> str:
        python = self.settings.triton_python
        if not python.exists():
            raise ServiceError(
                f"triton: the model environment {python.parent.parent} is missing; create it with "
                f"`python3 -m venv {python.parent.parent} && {python.parent}/pip install -r "
                f"triton_models/cpu/requirements.txt` (the README's set-up does this)"
            )
        result = subprocess.run(
            [
                str(python),
                "-c",
                "import sys,sysconfig; print(sys.version_info[:2], sysconfig.get_config_var('LIBDIR'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        version, libdir = result.stdout.strip().rsplit(" ", 1)
        expected = str(sys.version_info[:2])
        if version != expected:
            raise ServiceError(f"triton: model environment is Python {version}; the backend stub used is {expected}")
        return libdir

    def prepare(self) -> None:
        repository = self.settings.model_repository
        if not repository.is_dir():
            raise ServiceError(f"triton: model repository {repository} does not exist")
        self.fetch_server()
        self.layout_backend()
        remove_orphaned_shm()

    def launch(self) -> Launch:
        s = self.settings
        libdir = self._env_python_libdir()
        bundled_libs = self.dist / "nvidia_pytriton.libs"
        env = {
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (libdir, str(bundled_libs), os.environ.get("LD_LIBRARY_PATH", "")) if p
            ),
            # The stub runs Python isolated (PYTHONPATH is ignored) and finds this venv via python3 on PATH.
            "PATH": os.pathsep.join((str(s.triton_python.parent), os.environ.get("PATH", ""))),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            # The chat models find their converted weights here (triton_models/cpu/_shared/model_files.py).
            "RAGSTREAM_CACHE_DIR": str(s.cache_path),
            # LoRA adapters `ragstream finetune` writes (<data dir>/adapters/<tenant>/<sha16>); a request names one
            # with the optional `lora_name` input and the chat model loads it on first use.
            "RAGSTREAM_ADAPTERS_DIR": str(s.adapters_path),
        }
        argv = [
            str(self.server_root / "bin" / "tritonserver"),
            f"--model-repository={s.model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={s.host}",
            f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.triton_grpc_port}",
            "--disable-auto-complete-config",
            *self._model_flags(),
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]
        if s.triton_metrics:
            argv += [f"--metrics-address={s.host}", f"--metrics-port={s.triton_metrics_port}"]
        else:
            argv += ["--allow-metrics=false"]
        return Launch(argv, env=env)

    def models_to_load(self) -> list[str]:
        wanted = self.settings.triton_load_models.strip()
        if wanted in ("", "*"):
            return sorted(p.parent.name for p in self.settings.model_repository.glob("*/config.pbtxt"))
        return [name.strip() for name in wanted.split(",") if name.strip()]

    def _model_flags(self) -> list[str]:
        # Always explicit: "*" means every directory with a config.pbtxt, so helper folders such as
        # triton_models/cpu/_shared (code the models share) are not mistaken for models.
        return ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models_to_load())]

    def fatal_error(self) -> str | None:
        """A model that fails to load leaves the server hanging in start-up; read its log to fail fast."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if any(marker in line for marker in _FATAL_MARKERS):
                return line.strip()[:500]
        return None

    def probe(self) -> str | None:
        url = f"http://{self.settings.host}:{self.settings.triton_http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return None
                return f"Triton not ready (HTTP {response.status})"
        except urllib.error.HTTPError as exc:
            return f"Triton not ready (HTTP {exc.code}: models still loading or failed; see the log)"
        except OSError as exc:
            return f"no Triton answer on {self.settings.host}:{self.settings.triton_http_port} ({exc})"

    def after_stop(self) -> None:
        kill_stubs(self.backend_dir)
        remove_orphaned_shm()
