#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gz_console.settings")
    production = os.environ.get("GZ_ENV") == "production"
    if not production and not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        # outside the launcher (a developer's ./manage.py shell): start or reuse the embedded servers
        from gz_console.launcher import services_env

        env, _started = services_env(quiet=True)
        os.environ.update({key: env[key] for key in ("DATABASE_URL", "REDIS_URL")})
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
