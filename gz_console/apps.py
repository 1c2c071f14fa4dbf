from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _session_settings(sender, connection, **kwargs):
    """PostgreSQL's JIT compiles a query once its estimated cost is high, which every statement over
    many company schemas (report selectors, a UNION ALL per 200 schemas) reaches: one such
    statement spent 5.4 s compiling for 0.2 s of work (docs/decisions.md, Report benchmark). Our
    statements are many and short, so JIT is off for the console's sessions."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")


class GzConsoleConfig(AppConfig):
    name = "gz_console"
    verbose_name = "GZ Console"

    def ready(self):
        connection_created.connect(_session_settings, dispatch_uid="gz_console.session_settings")
