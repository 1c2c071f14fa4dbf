from django import template

register = template.Library()


@register.filter
def of_kind(items: list[dict], kind: str) -> list[dict]:
    return [item for item in items if item["kind"] == kind and item["parent"] is None]


@register.filter
def children_of(items: list[dict], key: str) -> list[dict]:
    return [item for item in items if item["parent"] == key]
