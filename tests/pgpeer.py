"""A real PostgreSQL for the journal tests: initdb into a temp dir, started on a free port.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
user (``runuser``) in a directory that user owns; as anyone else it runs as that user.
The superuser has a password (scram-sha-256 over TCP), so tests can check the DSN's
secret never leaks. Stopped by ``pg_ctl stop -m immediate``; the directory is removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from gearshift.sim.broker import free_port, wait_for_port

INSTALL = "apt-get install -y postgresql"
PASSWORD = "pg-s3cret-never-logged"


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail(f"PostgreSQL is not installed; run: {INSTALL}")
    return Path(found[-1]).parent


@dataclass
class PgServer:
    bindir: Path
    directory: Path
    port: int
    as_user: list[str]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [*self.as_user, str(self.bindir / "psql"), "-h", str(self.directory), "-p",
             str(self.port), "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
             "-At", "-c", sql], capture_output=True, text=True, check=True, timeout=30)
        return result.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D",
                        str(self.directory / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PgServer:
    bindir = pg_bindir()
    directory = Path(tempfile.mkdtemp(prefix="gearshift-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.fail("runuser is missing (util-linux); PostgreSQL cannot run as root")
        shutil.chown(directory, user="postgres", group="postgres")
        as_user = [runuser, "-u", "postgres", "--"]
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, user="postgres", group="postgres")
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(directory / "data"), "-U",
                    "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8"],
                   capture_output=True, check=True, timeout=120)
    port = free_port()
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(directory / "data"), "-l",
                    str(directory / "postgres.log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                    f"-c max_connections=50", "start"],
                   capture_output=True, check=True, timeout=90)
    wait_for_port("127.0.0.1", port, timeout=30)
    return PgServer(bindir=bindir, directory=directory, port=port, as_user=as_user)
