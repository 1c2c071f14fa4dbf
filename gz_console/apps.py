from django.apps import AppConfig


class GzConsoleConfig(AppConfig):
    name = "gz_console"
    verbose_name = "GZ Console"
