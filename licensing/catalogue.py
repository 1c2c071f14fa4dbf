"""Loading and reading the catalogue (E1, E2, E7). Loading is idempotent: items are matched by key."""

import json
from pathlib import Path

CATALOGUE_FILE = Path(__file__).resolve().parent / "fixtures" / "catalogue.json"


def catalogue_load(*, item_model=None, rule_model=None, path: Path = CATALOGUE_FILE) -> dict[str, int]:
    """Create or update every item and rule of the file. Accepts the historical models of a data
    migration; defaults to the current ones."""
    if item_model is None:
        from .models import CatalogItem as item_model
        from .models import ModelRule as rule_model
    data = json.loads(path.read_text())
    by_key = {}
    for position, entry in enumerate(data["items"]):
        item, _ = item_model.objects.update_or_create(key=entry["key"], defaults={
            "name": entry["name"], "kind": entry["kind"], "rank": entry.get("rank", position),
            "description": entry.get("description", ""), "parent": by_key.get(entry.get("parent")),
        })
        by_key[item.key] = item
    for entry in data["items"]:
        by_key[entry["key"]].product_types.set([by_key[k] for k in entry.get("product_types", [])])
    keep = set()
    for rule in data["rules"]:
        obj, _ = rule_model.objects.update_or_create(
            protection_model=by_key[rule["model"]], item=by_key[rule["item"]],
            defaults={"relation": rule["relation"]})
        keep.add(obj.pk)
    rule_model.objects.exclude(pk__in=keep).delete()
    return {"items": len(by_key), "rules": len(keep)}
