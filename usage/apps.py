from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"

    def ready(self):
        from companies import services as company_services

        from .selectors import usage_after_move

        company_services.MOVE_HOOKS.append(usage_after_move)
