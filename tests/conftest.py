import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from django.db import connection

from companies.services import platform_ensure

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def platform(db):
    """The root company and the catalogue, as migrate leaves them. Transactional tests flush every
    table afterwards, data migrations included, so both are restored here when missing."""
    from licensing.catalogue import catalogue_load
    from licensing.models import CatalogItem

    if not CatalogItem.objects.exists():
        catalogue_load()
    return platform_ensure()


def worker_database_url() -> str:
    """DATABASE_URL pointed at the test database pytest-django created."""
    parts = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    return urllib.parse.urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """A real Celery worker process on the test database and the real Redis broker."""
    with django_db_blocker.unblock():
        env = {**os.environ, "DATABASE_URL": worker_database_url(),
               "DJANGO_SETTINGS_MODULE": "gz_console.settings_test"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "gz_console", "worker", "--pool", "solo",
         "-n", f"test-{os.getpid()}@%h", "-l", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env,
    )
    from gz_console.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5, limit=1):
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            pytest.fail("the Celery worker did not start")
    yield worker
    worker.terminate()
    worker.wait(timeout=20)
