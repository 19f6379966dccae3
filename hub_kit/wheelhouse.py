"""Offline install kits: collect flsilo and its dependencies as hashed wheels, sign, verify.

A connected machine (which never holds the hub's key) runs ``pip`` to collect wheels for a
named target into a folder, writes ``requirements.txt`` with every file pinned by version and
SHA-256 and a ``SHA256SUMS`` that ``sha256sum -c`` checks. The offline hub signs
``SHA256SUMS`` (namespace ``flsilo-wheelhouse``); the site checks the signature and the sums
with stock tools (or ``flsilo wheelhouse verify``) and installs with
``pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt``.
Nothing here imports torch; pip runs as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from flsilo.format.artifact import sha256_file
from flsilo.fs.atomic import atomic_directory, write_bytes, write_text
from flsilo.fs.folders import require_folder
from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded, read_signature_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, MalformedInputError, UsageError, VerificationError

NAMESPACE = "flsilo-wheelhouse"
SUMS = "SHA256SUMS"
REQUIREMENTS = "requirements.txt"
MANIFEST = "wheelhouse.json"
TARGETS = ("cpu", "cuda")
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
"""Where CPU-only torch wheels come from when neither --find-links nor --index-url is given."""

_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class PipError(FlsiloError):
    """pip could not collect or resolve the wheels (no network, no matching build)."""

    default_code = Code.PIP_FAILED
    default_hint = "read pip's message above; check --find-links/--index-url and the target"


@dataclass
class BuildRequest:
    """What to collect: for which target, interpreter and platform, from where."""

    out: Path
    target: str = "cpu"
    python: str | None = None
    platform: str | None = None
    find_links: list[Path] = field(default_factory=list)
    index_url: str | None = None
    extras: list[str] = field(default_factory=list)
    source: Path | None = None


@dataclass
class Wheel:
    file: str
    name: str
    version: str
    sha256: str


def project_root() -> Path | None:
    """The flsilo source checkout this command runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "flsilo"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def pinned_torch(source: Path | None) -> str:
    """The torch version the project pins (constraints.txt), else the one installed."""
    if source is not None and (source / "constraints.txt").is_file():
        for line in (source / "constraints.txt").read_text(encoding="utf-8").splitlines():
            found = re.match(r"^\s*torch\s*==\s*([^\s#;+]+)", line)
            if found:
                return found.group(1)
    try:
        return metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError as exc:
        raise UsageError(
            "cannot tell which torch version to collect",
            code=Code.TORCH_VERSION,
            hint="run from a flsilo checkout (its constraints.txt pins torch)",
        ) from exc


def parse_wheel_name(file: str, where: Path | None = None) -> tuple[str, str]:
    found = _WHEEL_NAME.match(file)
    if not found:
        raise MalformedInputError(
            "not a wheel file name",
            path=where or file,
            code=Code.WHEELHOUSE_FILE,
            hint="remove the file",
        )
    return found.group("name").replace("_", "-").lower(), found.group("version")


def _pip(args: list[str], what: str) -> str:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise PipError(f"pip failed while {what}: {tail[0].strip()}")
    return done.stdout


def source_options(req: BuildRequest) -> list[str]:
    """Where pip looks besides its configured index: --find-links, --index-url, CPU torch."""
    opts: list[str] = []
    for link in req.find_links:
        opts += ["--find-links", str(link)]
    if req.index_url:
        opts += ["--extra-index-url", req.index_url]
    if req.target == "cpu" and not req.find_links and not req.index_url:
        opts += ["--extra-index-url", CPU_TORCH_INDEX]
    return opts


def platform_options(req: BuildRequest) -> list[str]:
    opts = ["--only-binary=:all:"]  # the site never compiles anything
    if req.python:
        opts += ["--python-version", req.python, "--implementation", "cp"]
    if req.platform:
        opts += ["--platform", req.platform]
    return opts


def build_flsilo_wheel(source: Path, dest: Path) -> Path:
    """``pip wheel`` the flsilo checkout (no dependencies) into ``dest``."""
    _pip(
        ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), str(source)], "building flsilo"
    )
    wheels = sorted(dest.glob("flsilo-*.whl"))
    if not wheels:
        raise PipError("pip built no flsilo wheel", path=source)
    return wheels[-1]


def requirement_lines(req: BuildRequest, flsilo_wheel: Path, source: Path | None) -> list[str]:
    """flsilo's wheel, torch at the pinned version, and the checkout's constraints.txt."""
    extras = f"[{','.join(req.extras)}]" if req.extras else ""
    lines = [
        f"flsilo{extras} @ {flsilo_wheel.resolve().as_uri()}",
        f"torch=={pinned_torch(source)}",
    ]
    if source is not None and (source / "constraints.txt").is_file():
        lines.append(f"-c {shlex.quote(str((source / 'constraints.txt').resolve()))}")
    return lines


def check_target(req: BuildRequest, names: list[str]) -> None:
    """A CPU wheelhouse must not hold CUDA runtime wheels (PyPI's Linux torch pulls them)."""
    cuda = sorted(n for n in names if n.startswith("nvidia-") or n == "triton")
    if req.target == "cpu" and cuda:
        raise UsageError(
            f"the CPU target resolved the CUDA build of torch ({', '.join(cuda[:3])}, ...)",
            path=req.out,
            code=Code.WHEELHOUSE_CUDA_TORCH,
            hint=f"pass --index-url {CPU_TORCH_INDEX} or --find-links DIR holding a +cpu torch wheel",
        )


def resolve(req: BuildRequest) -> list[dict[str, Any]]:
    """What pip would collect for ``req``, without downloading: [{name, version, url}]."""
    source = req.source or project_root()
    if source is None:
        raise _no_source()
    with tempfile.TemporaryDirectory(prefix="flsilo-resolve-") as tmp:
        wheel = build_flsilo_wheel(source, Path(tmp))
        reqs = Path(tmp) / "in.txt"
        reqs.write_text("\n".join(requirement_lines(req, wheel, source)) + "\n")
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        args += ["-r", str(reqs), *source_options(req), *platform_options(req)]
        if req.python or req.platform:
            args += ["--target", str(Path(tmp) / "never-written")]
        _pip(args, "resolving")
        data = json.loads(report.read_text())
    items = [
        {
            "name": item["metadata"]["name"].lower(),
            "version": item["metadata"]["version"],
            "url": item.get("download_info", {}).get("url", ""),
        }
        for item in data.get("install", [])
    ]
    check_target(req, [i["name"] for i in items])
    return sorted(items, key=lambda i: i["name"])


def _no_source() -> UsageError:
    return UsageError(
        "flsilo does not run from a source checkout here",
        code=Code.WHEELHOUSE_SOURCE,
        hint="pass --source DIR (a flsilo checkout) on the connected machine",
    )


def build(req: BuildRequest) -> list[Wheel]:
    """Collect every wheel into ``req.out`` and write requirements.txt, SHA256SUMS, wheelhouse.json."""
    if req.target not in TARGETS:
        raise UsageError(f"unknown target {req.target!r}", hint="use --target cpu or cuda")
    require_folder(
        req.out, "the wheelhouse", hint="pass a new folder; 'wheelhouse build' creates it"
    )
    if req.out.exists() and any(req.out.iterdir()):
        raise UsageError(
            "wheelhouse folder exists and is not empty",
            path=req.out,
            code=Code.EXISTS,
            hint="pass a new folder; a wheelhouse is built once and then signed",
        )
    source = req.source or project_root()
    if source is None:
        raise _no_source()
    # Built in a hidden staging folder that becomes OUT only when complete: a failed build
    # (no index, no torch for the target) leaves nothing behind, and a rerun starts clean.
    with atomic_directory(req.out) as out:
        wheels = _collect(req, source, out)
    return wheels


def _collect(req: BuildRequest, source: Path, out: Path) -> list[Wheel]:
    with tempfile.TemporaryDirectory(prefix="flsilo-wheel-") as tmp:
        flsilo_wheel = shutil.copy2(build_flsilo_wheel(source, Path(tmp)), out)
    reqs = out / ".collect.txt"
    reqs.write_text("\n".join(requirement_lines(req, Path(flsilo_wheel), source)) + "\n")
    try:
        args = ["download", "--quiet", "--dest", str(out), "-r", str(reqs)]
        _pip([*args, *source_options(req), *platform_options(req)], "collecting wheels")
    finally:
        reqs.unlink(missing_ok=True)
    wheels = []
    for path in sorted(out.glob("*.whl")):
        name, version = parse_wheel_name(path.name, req.out / path.name)
        wheels.append(Wheel(path.name, name, version, sha256_file(path)))
    check_target(req, [w.name for w in wheels])
    write_text(out / REQUIREMENTS, requirements_text(wheels, req))
    write_text(out / MANIFEST, manifest_text(wheels, req))
    write_sums(out)
    return wheels


def requirements_text(wheels: list[Wheel], req: BuildRequest) -> str:
    head = [
        f"# flsilo offline wheelhouse, target {req.target}; install with:",
        "#   pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt",
    ]
    return (
        "\n".join(head + [f"{w.name}=={w.version} --hash=sha256:{w.sha256}" for w in wheels]) + "\n"
    )


def manifest_text(wheels: list[Wheel], req: BuildRequest) -> str:
    from flsilo import __version__

    doc = {
        "kind": "flsilo-wheelhouse",
        "flsilo_version": __version__,
        "target": req.target,
        "python": req.python or f"{sys.version_info.major}.{sys.version_info.minor}",
        "platform": req.platform or "this machine's",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wheels": [w.__dict__ for w in wheels],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_sums(out: Path) -> None:
    """``sha256sum`` format over every file but SHA256SUMS and its signature."""
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(SUMS))
    text = "".join(f"{sha256_file(out / name)}  {name}\n" for name in files)
    write_text(out / SUMS, text)


def read_sums(out: Path) -> bytes:
    """The bytes of ``out/SHA256SUMS``, a regular file of at most a few MiB (read bounded)."""
    require_folder(out, "the wheelhouse", SUMS)
    try:
        return read_bounded(out / SUMS, MAX_SMALL_FILE_BYTES)
    except MalformedInputError as exc:
        if exc.code != Code.MISSING:
            raise
        raise UsageError(
            f"{SUMS} is missing: this is not a wheelhouse",
            path=out,
            code=Code.WHEELHOUSE_MISSING,
            hint="give the folder 'flsilo wheelhouse build' wrote",
        ) from exc


def check_sums(out: Path) -> list[str]:
    """Check every line of SHA256SUMS (like ``sha256sum -c``) and that no file is unlisted."""
    sums = out / SUMS
    try:
        lines = read_sums(out).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise MalformedInputError(f"{SUMS} is not UTF-8 text", path=sums) from exc
    listed = []
    for line in lines:
        digest, _, name = line.partition("  ")
        if (
            not re.fullmatch(r"[0-9a-f]{64}", digest)
            or not name
            or "/" in name
            or name.startswith(".")
        ):
            raise MalformedInputError(f"bad line in {SUMS}: {line[:60]!r}", path=sums)
        path = out / name
        if not path.is_file() or sha256_file(path) != digest:
            raise VerificationError(
                f"{name} is missing or does not match its SHA-256 in {SUMS}",
                path=path,
                code=Code.WHEELHOUSE_TAMPERED,
                hint="do not install from this folder; get a fresh copy of the signed wheelhouse",
            )
        listed.append(name)
    extra = sorted(
        p.name for p in out.iterdir() if p.name not in listed and not p.name.startswith(SUMS)
    )
    if extra:
        raise VerificationError(
            f"{extra[0]} is not listed in {SUMS}",
            path=out / extra[0],
            code=Code.WHEELHOUSE_TAMPERED,
            hint="a signed wheelhouse holds only the files it lists; remove the stranger or get a fresh copy",
        )
    return listed


def sign(out: Path, key: Any) -> Path:
    """Check the sums, then sign SHA256SUMS with ``key``; return the .sig path."""
    from flsilo.signing.sshsig import sign_digest

    check_sums(out)
    digest = hashlib.sha256(read_sums(out)).digest()
    sig = out / f"{SUMS}.sig"
    write_bytes(sig, sign_digest(key, NAMESPACE, digest))
    return sig


def verify(out: Path, hub_pub: Any) -> list[str]:
    """The signature over SHA256SUMS by ``hub_pub`` (a PublicKey), then every file's sum."""
    from flsilo.signing.sshsig import check_signature, parse_signature

    require_folder(out, "the wheelhouse", SUMS)
    sig_file = out / f"{SUMS}.sig"
    data = read_signature_file(sig_file)
    if data is None:
        raise VerificationError(
            f"{SUMS}.sig is missing: the wheelhouse is not signed",
            path=out,
            code=Code.MISSING_SIGNATURE,
            hint="the hub signs it with 'flsilo wheelhouse sign' before it travels",
        )
    sig = parse_signature(data, source=str(sig_file))
    digest = hashlib.new(sig.hash_algorithm, read_sums(out)).digest()
    check_signature(sig, NAMESPACE, digest, source=str(sig_file))
    if sig.public_key.blob != hub_pub.blob:
        raise VerificationError(
            f"signed by {sig.public_key.fingerprint}, not by the hub key {hub_pub.fingerprint}",
            path=sig_file,
            code=Code.UNKNOWN_SIGNER,
            hint="install only a wheelhouse signed by your federation's hub",
        )
    return check_sums(out)


def install_command(out: Path) -> list[str]:
    """The command a site runs, offline, to install from ``out``."""
    return [
        "pip",
        "install",
        "--no-index",
        "--find-links",
        str(out),
        "--require-hashes",
        "-r",
        str(out / REQUIREMENTS),
    ]
