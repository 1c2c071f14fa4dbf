"""Mapping between GZ Console's words and the original API's field names and codes (docs/jsonrpc-api.md)."""

from companies.models import Company, CompanyStatus, CompanyType, FieldOfActivity

# createCompany / getCompanyDetails "type"
COMPANY_TYPES = {0: CompanyType.PARTNER, 1: CompanyType.CUSTOMER}
COMPANY_TYPE_CODES = {v: k for k, v in COMPANY_TYPES.items()}

# the original's "industry" codes for our fixed fields of activity (H2); ours without an exact code
# answer 0 (UNDEFINED) and keep the exact value in "fieldOfActivity"
INDUSTRY_CODES = {
    FieldOfActivity.AGRICULTURE: 2, FieldOfActivity.AUTOMOTIVE: 4, FieldOfActivity.CONSTRUCTION: 9,
    FieldOfActivity.EDUCATION: 13, FieldOfActivity.ENERGY: 14, FieldOfActivity.FINANCE: 16,
    FieldOfActivity.GOVERNMENT: 18, FieldOfActivity.HEALTHCARE: 19, FieldOfActivity.HOSPITALITY: 20,
    FieldOfActivity.MANUFACTURING: 21, FieldOfActivity.MEDIA: 23, FieldOfActivity.NON_PROFIT: 25,
    FieldOfActivity.LEGAL: 26, FieldOfActivity.RETAIL: 28, FieldOfActivity.IT: 30,
    FieldOfActivity.TELECOM: 31, FieldOfActivity.TRANSPORT: 32,
}
INDUSTRIES = {code: field for field, code in INDUSTRY_CODES.items()}

# product types of getMonthlyUsagePerProductType / licenseSubscription.assignedProductType
PRODUCT_TYPES = {0: "endpoint_security", 1: "edr_standalone"}
PRODUCT_TYPE_CODES = {v: k for k, v in PRODUCT_TYPES.items()}
PROTECTION_MODELS = {"aLaCarte": "a_la_carte", "secure": "secure", "securePlus": "secure_plus",
                     "secureExtra": "secure_extra"}
# add-on / service names of the original (ownUse.addons, getLicenseInfo "manage*") -> catalogue keys
ADDONS = {
    "patchManagement": "patch_management", "encryption": "full_disk_encryption",
    "ats": "advanced_threat_security", "edr": "edr", "xdr": "xdr", "integrityMonitoring": "integrity_monitoring",
    "dataRetention": "data_retention", "remoteEnginesScanning": "sve", "containerProtection": "container_protection",
    "exchange": "security_for_exchange", "emailSecurity": "email_security", "mdrFoundations": "mdr_foundations",
    "xdrIdentity": "xdr_identity", "xdrProductivity": "xdr_productivity", "xdrNetwork": "xdr_network",
    "xdrCloud": "xdr_cloud", "retention90Days": "retention_90d", "retention180Days": "retention_180d",
    "retention1Year": "retention_1y",
}
ADDON_NAMES = {v: k for k, v in ADDONS.items()}

# getMonthlyUsage: the original's field -> the usage figure (usage.models.CompanyMonthUsage.FIGURES)
MONTHLY_USAGE_FIELDS = {
    "endpointMonthlyUsage": "endpoint_usage",
    "encryptionMonthlyUsage": "full_disk_encryption",
    "atsMonthlyUsage": "ats",
    "edrMonthlyUsage": "edr",
    "patchManagementMonthlyUsage": "patch_management",
    "containerProtectionMonthlyUsage": "container_protection",
    "mdrFoundationsMonthlyUsage": "mdr_foundations",
    "exchangeMonthlyUsage": "exchange_mailboxes",
    "emailSecurityMonthlyUsage": "email_security_mailboxes",
    "integrityMonitoringUsage": "integrity_monitoring",
    "sveVsMonthlyUsage": "sve_vs",
    "sveVdiMonthlyUsage": "sve_vdi_hours",
    "xdrIdentitySensorsMonthlyUsage": "xdr_identity",
    "xdrProductivitySensorsMonthlyUsage": "xdr_productivity",
    "xdrNetworkSensorsMonthlyUsage": "xdr_network",
    "xdrCloudSensorsMonthlyUsage": "xdr_cloud",
    # GZ Console additions (not in the original): the report's other company-row figures
    "licensedEndpoints": "licensed_endpoints",
    "activeEndpoints": "active_endpoints",
    "hyperDetectMonthlyUsage": "hyperdetect",
    "sandboxAnalyzerMonthlyUsage": "sandbox_analyzer",
}
FIGURE_NAMES = {v: k for k, v in MONTHLY_USAGE_FIELDS.items()}


def company_id(company: Company | int | None) -> str | None:
    """Ids travel as strings, as in the original API (ours are integers; both are accepted)."""
    if company is None:
        return None
    return str(company if isinstance(company, int) else company.pk)


def company_details(company: Company, *, viewer: Company) -> dict:
    return {
        "id": company_id(company),
        "name": company.name,
        "type": COMPANY_TYPE_CODES[company.type],
        # the caller's own parent lies outside its view (C6)
        "parentId": None if company.pk == viewer.pk else company_id(company.parent_id),
        "country": company.country,
        "address": company.address,
        "phone": company.phone,
        "industry": INDUSTRY_CODES.get(company.field_of_activity, 0),
        "canBeManagedByAbove": company.partner_can_assist,
        "isSuspended": company.status == CompanyStatus.SUSPENDED,
        "enforce2FA": company.enforce_two_factor,
        "licenseKey": company.license_key,
        # GZ Console additions
        "fieldOfActivity": company.field_of_activity,
        "managesSecurity": company.manages_security,
    }
