from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"

    def ready(self):
        from companies import services as company_services

        from .entitlements import entitlement_mdr_assist_check, entitlement_mdr_move_check, entitlement_move_check
        from .seats import seat_after_move, seat_move_check, seats_expire_company, seats_revive_company
        from .subscriptions import subscription_move_check

        # H5: a change of partner checks products, seats and end dates (S2), then moves the seats along
        company_services.MOVE_CHECKS.extend([entitlement_move_check, entitlement_mdr_move_check, seat_move_check,
                                             subscription_move_check])
        # C3/E6: assist stays on while MDR Foundations needs it
        company_services.ASSIST_CHECKS.append(entitlement_mdr_assist_check)
        company_services.MOVE_HOOKS.append(seat_after_move)
        # H4/T5: suspension expires the company's endpoints; reactivation brings them back as trials
        company_services.STATUS_HOOKS.append(
            lambda company, status: seats_expire_company(company=company) if status == "suspended"
            else seats_revive_company(company=company))
