"""Load the demo tree and one user per role; safe to run again (nothing is duplicated)."""

import datetime as dt

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from companies.models import Company, CompanyType, Role, User
from companies.services import company_create, platform_ensure, user_create

DEMO_PASSWORD = "gz-demo-2026"  # noqa: S105 - printed to the operator, demo data only

# (name, type, parent name or None for the platform, manages_security)
TREE = [
    ("Northwind Distribution", CompanyType.PARTNER, None, True),
    ("Contoso MSP", CompanyType.PARTNER, "Northwind Distribution", True),
    ("Fabrikam IT Services", CompanyType.PARTNER, "Northwind Distribution", True),
    ("Litware Resellers", CompanyType.PARTNER, "Northwind Distribution", False),
    ("Adatum Dental", CompanyType.CUSTOMER, "Contoso MSP", True),
    ("Blue Yonder Logistics", CompanyType.CUSTOMER, "Contoso MSP", True),
    ("Coho Winery", CompanyType.CUSTOMER, "Fabrikam IT Services", True),
    ("Tailspin Toys", CompanyType.CUSTOMER, "Litware Resellers", True),
]

# (email, full name, company name or None for the platform, role)
USERS = [
    ("admin@platform.example", "Platform Administrator", None, Role.COMPANY_ADMIN),
    ("admin@northwind.example", "Nora Distributor", "Northwind Distribution", Role.COMPANY_ADMIN),
    ("admin@contoso.example", "Carla Admin", "Contoso MSP", Role.COMPANY_ADMIN),
    ("network@contoso.example", "Nico Network", "Contoso MSP", Role.NETWORK_ADMIN),
    ("analyst@contoso.example", "Sam Analyst", "Contoso MSP", Role.SECURITY_ANALYST),
    ("reporter@contoso.example", "Rita Reporter", "Contoso MSP", Role.REPORTER),
    ("admin@fabrikam.example", "Frank Admin", "Fabrikam IT Services", Role.COMPANY_ADMIN),
    ("admin@litware.example", "Lia Reseller", "Litware Resellers", Role.COMPANY_ADMIN),
    ("admin@adatum.example", "Ada Customer", "Adatum Dental", Role.COMPANY_ADMIN),
    ("admin@coho.example", "Cody Customer", "Coho Winery", Role.COMPANY_ADMIN),
]


class Command(BaseCommand):
    help = "Load demo companies and users (idempotent) and print the logins."

    def add_arguments(self, parser):
        parser.add_argument("--quiet-logins", action="store_true", help="Do not print the logins.")
        parser.add_argument("--logins-only", action="store_true", help="Only print the logins.")

    def handle(self, *args, **options):
        if not options["logins_only"]:
            self._load()
        if not options["quiet_logins"]:
            platform_name = Company.objects.get(parent__isnull=True).name
            self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
            for email, _name, company_name, role in USERS:
                self.stdout.write(f"  {email:<28} {role.label:<24} {company_name or platform_name}")

    @transaction.atomic
    def _load(self):
        platform = platform_ensure()
        by_name = {None: platform}
        created = 0
        for name, type_, parent_name, manages_security in TREE:
            parent = by_name[parent_name]
            company = Company.objects.filter(parent=parent, name=name).first()
            if company is None:
                company = company_create(parent=parent, name=name, type=type_,
                                         manages_security=manages_security, country="US")
                created += 1
            by_name[name] = company
        for email, full_name, company_name, role in USERS:
            if not User.objects.filter(email=email).exists():
                user_create(company=by_name[company_name], email=email, full_name=full_name,
                            role=role, password=DEMO_PASSWORD, is_staff=company_name is None)
        if created:
            self._licensing(by_name)
        self._telemetry(by_name)
        self.stdout.write(f"Demo data ready ({created} companies created).")

    # (company, endpoints): companies with a reservation of their own or under Fabrikam and Litware,
    # so the demo fleet leaves Contoso's shared pool as the licensing walkthrough expects it
    FLEET = (("Adatum Dental", 12), ("Coho Winery", 6), ("Tailspin Toys", 5))
    FLEET_DAYS = 35

    def _telemetry(self, by_name):
        """Endpoints and heartbeats for the demo customers, through the agent API's own services (no
        server runs yet), then rolled up, so a new user sees real usage for this month and the last.
        Idempotent: the same machines and heartbeat ids each run (T4, T7); a later run adds the days
        since."""
        from usage.management.commands.simulate_fleet import LocalTransport, fleet_simulate

        now = timezone.now()
        transport = LocalTransport(registered_at=now - dt.timedelta(days=self.FLEET_DAYS))
        for name, endpoints in self.FLEET:
            fleet_simulate(companies=[by_name[name]], endpoints=endpoints, days=self.FLEET_DAYS, per_day=4,
                           transport=transport, threads=1, now=now, progress=False)

    def _licensing(self, by_name):
        """Seats and products for the demo tree, through the licensing services."""
        from licensing.entitlements import entitlements_set, mdr_contact_set
        from licensing.models import CatalogItem
        from licensing.services import license_update

        everything = set(CatalogItem.objects.values_list("key", flat=True))
        mdr = {"primary_name": "SOC desk", "primary_email": "soc@{}.example", "primary_phone": "+1 555 0100",
               "escalation_name": "Duty manager", "escalation_email": "duty@{}.example",
               "escalation_phone": "+1 555 0199"}
        for name, domain in (("Northwind Distribution", "northwind"), ("Contoso MSP", "contoso"),
                             ("Fabrikam IT Services", "fabrikam")):
            mdr_contact_set(actor=None, company=by_name[name], **{k: v.format(domain) for k, v in mdr.items()})
        license_update(actor=None, company=by_name["Northwind Distribution"], reserved_seats=1000,
                       resell=everything)
        for name, seats in (("Contoso MSP", 200), ("Fabrikam IT Services", 100)):
            license_update(actor=None, company=by_name[name], reserved_seats=seats, resell=everything)
        # a reseller without MDR contacts cannot resell the MDR bundles (E5)
        license_update(actor=None, company=by_name["Litware Resellers"], reserved_seats=50,
                       resell=everything - {"secure_plus", "secure_extra", "mdr_foundations"})
        license_update(actor=None, company=by_name["Adatum Dental"], reserved_seats=25, minimum_usage=10,
                       own_use={"endpoint_security", "secure", "patch_management"})
        license_update(actor=None, company=by_name["Blue Yonder Logistics"],
                       own_use={"endpoint_security", "a_la_carte", "full_disk_encryption", "sve",
                                "container_protection"})
        license_update(actor=None, company=by_name["Coho Winery"], own_use={"edr_standalone"})
        entitlements_set(actor=None, company=by_name["Tailspin Toys"], purpose="own",
                         keys={"endpoint_security", "a_la_carte", "email_security", "security_for_exchange"})
