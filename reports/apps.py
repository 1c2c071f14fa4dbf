from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"

    def ready(self):
        from companies import services as company_services

        from .schedules import schedules_after_move

        company_services.MOVE_HOOKS.append(schedules_after_move)
