from django import template
from django.templatetags.static import static

register = template.Library()


@register.simple_tag
def company_logo_url(company) -> str:
    """H2: the company's logo, or the platform's default logo when it has none."""
    if company is not None and company.logo:
        return company.logo.url
    return static("img/default-logo.svg")


@register.filter
def pairs(mapping) -> list[tuple]:
    """A dict's items for templates; `d.items` would read a key named "items" instead."""
    return sorted(mapping.items()) if isinstance(mapping, dict) else []
