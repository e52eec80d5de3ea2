"""`make image`: the gateway image, built without network from a wheelhouse made beforehand.

1. The gateway wheel: the one given (`--wheel`, e.g. a test release) or `pip wheel --no-deps .`,
   unpacked with `pip install --no-deps --target` into the build context (one small layer).
2. The wheelhouse of its runtime dependencies: `requirements-runtime.lock` (pinned, with hashes)
   when it exists, else the wheel's own Requires-Dist. It is resolved by the base image's own
   Python (a throwaway container of BASE_IMAGE on the host network), because dependency markers
   differ between patch releases (redis needs async-timeout below Python 3.11.3; the local base
   has 3.11.2). It is kept under build/wheelhouse/<digest> and reused while its inputs hold.
3. `DOCKER_BUILDKIT=0 docker build --network none` (gateway_app/Dockerfile): pip installs the
   dependencies only from that wheelhouse (`--no-index`): no package can come from anywhere else.

The image is skipped when one with the same tag was built from the same inputs (the
`llm-gateway.inputs` label). Concurrent builds (pytest-xdist workers) serialize on a file lock.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "gateway_app" / "Dockerfile"
LOCK_FILE = REPO / "requirements-runtime.lock"
BUILD_DIR = REPO / "build"
IMAGE_NAME = "llm-gateway"
LOCAL_BASE_IMAGE = "local/python:3.11-bookworm"
INPUTS_LABEL = "llm-gateway.inputs"
IMAGE_APP_DIR = "/opt/gateway-app"  # gateway_app/Dockerfile copies gateway-app/ there
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bounds: resolving the wheelhouse downloads from the package index; a cold build on the vfs
# storage driver takes about 1.5 min.
WHEELHOUSE_TIMEOUT_SECONDS = 600
BUILD_TIMEOUT_SECONDS = 900


class ImageBuildError(RuntimeError):
    pass


def _run(cmd: list[str], timeout: float, what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{what}: no result after {timeout:.0f}s ({' '.join(cmd[:3])} ...)") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise ImageBuildError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return done


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def wheel_packages() -> list[str]:
    """The top-level packages pyproject.toml puts in the wheel (its find include patterns)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [p.removesuffix("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]


def source_digest() -> str:
    """What the gateway wheel is built from: the package sources and the project metadata."""
    files = [REPO / "pyproject.toml", REPO / "README.md"]
    files += sorted(
        p
        for package in wheel_packages()
        for p in (REPO / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    return _sha256(*(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in files))


def build_wheel(out_dir: Path) -> Path:
    """The gateway wheel of this checkout, in ``out_dir`` (named for the sources: built once)."""
    existing = sorted(out_dir.glob("*.whl"))
    if existing:
        return existing[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        _run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp, str(REPO)],
            300,
            "building the gateway wheel",
        )
        (built,) = Path(tmp).glob("*.whl")
        target = out_dir / built.name
        shutil.move(built, target)
    return target


def wheel_version(wheel: Path) -> str:
    match = re.match(r"^[^-]+-([^-]+)-", wheel.name)
    if not match:
        raise ImageBuildError(f"{wheel}: not a wheel file name (name-version-...whl)")
    return match.group(1)


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's runtime dependencies (Requires-Dist), as pip requirement lines."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def image_id(name: str) -> str | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def image_label(name: str, label: str) -> str | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def wheelhouse(requirements: str, hashed: bool, base_image: str) -> Path:
    """The dependency wheels for ``requirements``, resolved by ``base_image``'s Python."""
    base_id = image_id(base_image)
    if base_id is None:
        raise ImageBuildError(
            f"base image {base_image} not found: run scripts/docker_engine.sh (it builds "
            f"{LOCAL_BASE_IMAGE}) or pass --base-image"
        )
    key = _sha256(base_id.encode(), requirements.encode(), b"hashed" if hashed else b"")[:16]
    house = BUILD_DIR / "wheelhouse" / key
    with _locked(BUILD_DIR / "wheelhouse" / f"{key}.lock"):
        if (house / "requirements.txt").exists():
            return house
        staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=house.parent))
        (staging / "in.txt").write_text(requirements)
        pip_args = ["--quiet", "--wheel-dir", "/wheelhouse", "--requirement", "/wheelhouse/in.txt"]
        if hashed:
            pip_args.append("--require-hashes")
        # The container trusts what the host trusts (a TLS-inspecting proxy's CA, for one) and
        # uses the host's index when one is configured through the environment.
        host_access = (
            ["--env", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"] if "PIP_INDEX_URL" in os.environ else []
        )
        if HOST_CA_BUNDLE.exists():
            host_access += ["--volume", f"{HOST_CA_BUNDLE}:/host-ca.crt:ro", "--env", "PIP_CERT=/host-ca.crt"]
        try:
            user = ["--user", f"{os.getuid()}:{os.getgid()}", "--env", "HOME=/tmp"]
            mounts = ["--volume", f"{staging}:/wheelhouse", *host_access]
            pip_wheel = ["sh", "-c", 'python -m venv /tmp/venv && /tmp/venv/bin/pip wheel "$@"', "pip-wheel"]
            _run(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--network",
                    "host",
                    *user,
                    *mounts,
                    base_image,
                    *pip_wheel,
                    *pip_args,
                ],
                WHEELHOUSE_TIMEOUT_SECONDS,
                f"resolving the runtime wheelhouse with {base_image}'s Python",
            )
            # Written last: its presence says the wheelhouse is complete.
            (staging / "in.txt").rename(staging / "requirements.txt")
            staging.rename(house)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return house


def unpack_gateway(wheel: Path, target: Path) -> None:
    """Install the (pure-Python) gateway wheel, without dependencies, into ``target``: the image
    copies it to /opt/gateway-app as one small layer. Done here rather than in a build step
    because every build step copies the whole image on the vfs storage driver."""
    pip_install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    _run(
        [*pip_install, "--no-compile", "--target", str(target), str(wheel)],
        120,
        f"unpacking {wheel.name}",
    )
    # pip wrote the console script for this interpreter; in the image it runs the venv's.
    script = target / "bin" / "gateway"
    lines = script.read_text().splitlines(keepends=True)
    script.write_text("#!/opt/gateway/bin/python\n" + "".join(lines[1:]))
    # Bytecode now (the image's root filesystem is read-only), with the paths it will have there.
    _run(
        [sys.executable, "-m", "compileall", "-q", "-d", IMAGE_APP_DIR, str(target)],
        120,
        "compiling the gateway's bytecode",
    )


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=30)
    if done.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def build_image(
    wheel: Path | None = None,
    tag: str | None = None,
    base_image: str = LOCAL_BASE_IMAGE,
    log=print,
) -> str:
    """Build (or reuse) the image for ``wheel`` (default: this checkout) and return its tag."""
    BUILD_DIR.mkdir(exist_ok=True)
    with _locked(BUILD_DIR / "image.lock"):
        started = time.monotonic()
        if wheel is None:
            source = source_digest()
            wheel = build_wheel(BUILD_DIR / "gateway-wheels" / source[:16])
        else:
            source = _sha256(wheel.read_bytes())
        version = wheel_version(wheel)
        tag = tag or f"{IMAGE_NAME}:{version}"
        hashed = LOCK_FILE.exists()
        requirements = LOCK_FILE.read_text() if hashed else "\n".join(wheel_requirements(wheel)) + "\n"
        revision = git_revision()
        # The base image by content, not by name: a rebuilt base under the same tag makes a new image.
        base = image_id(base_image) or base_image
        inputs = _sha256(
            *(part.encode() for part in (source, requirements, base, revision)), DOCKERFILE.read_bytes()
        )
        if image_label(tag, INPUTS_LABEL) == inputs:
            log(f"{tag}: up to date (same wheel, dependencies, base image, Dockerfile and revision)")
            return tag
        house = wheelhouse(requirements, hashed, base_image)
        with tempfile.TemporaryDirectory(prefix="context-", dir=BUILD_DIR) as context:
            shutil.copytree(house, Path(context) / "deps")
            unpack_gateway(wheel, Path(context) / "gateway-app")
            build_args = [
                f"BASE_IMAGE={base_image}",
                f"VERSION={version}",
                f"REVISION={revision}",
                f"BUILD_INPUTS={inputs}",
            ]
            _run(
                ["docker", "build", "--network", "none", "--file", str(DOCKERFILE), "--tag", tag]
                + [arg for value in build_args for arg in ("--build-arg", value)]
                + [context],
                BUILD_TIMEOUT_SECONDS,
                f"docker build of {tag}",
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
        log(f"{tag}: built in {time.monotonic() - started:.1f}s")
        return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheel", type=Path, help="a gateway wheel to package (default: build this checkout)"
    )
    parser.add_argument("--tag", help=f"image tag (default: {IMAGE_NAME}:<the wheel's version>)")
    parser.add_argument(
        "--base-image",
        default=os.environ.get("BASE_IMAGE", LOCAL_BASE_IMAGE),
        help=f"image with python3 and venv (default: $BASE_IMAGE or {LOCAL_BASE_IMAGE})",
    )
    args = parser.parse_args(argv)
    try:
        tag = build_image(args.wheel.resolve() if args.wheel else None, args.tag, args.base_image)
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
