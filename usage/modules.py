"""The fixed bit of every module key (SPEC T3) and XDR sensor category. Never renumber: the bits are
stored in heartbeats and endpoint-day rows; a new key takes the next free bit.

A month's union of modules is `bit_or`, and each add-on count is one aggregate over a bit test.
"""

MODULE_BITS: dict[str, int] = {
    "antimalware": 1 << 0,
    "advanced_threat_control": 1 << 1,
    "advanced_anti_exploit": 1 << 2,
    "firewall": 1 << 3,
    "content_control": 1 << 4,
    "device_control": 1 << 5,
    "network_attack_defense": 1 << 6,
    "power_user": 1 << 7,
    "relay": 1 << 8,
    "patch_management": 1 << 9,
    "full_disk_encryption": 1 << 10,
    "hyperdetect": 1 << 11,
    "sandbox_analyzer": 1 << 12,
    "edr": 1 << 13,
    "integrity_monitoring": 1 << 14,
    "container_protection": 1 << 15,
    "security_for_exchange": 1 << 16,
}
CORE_MODULES = list(MODULE_BITS)[:9]  # U2: only antimalware adds usage among these

XDR_SENSOR_BITS: dict[str, int] = {
    "identity": 1 << 0,
    "productivity": 1 << 1,
    "network": 1 << 2,
    "cloud": 1 << 3,
}
# wire name of a sensor category -> catalogue key of the category
XDR_SENSOR_ITEMS = {"identity": "xdr_identity", "productivity": "xdr_productivity", "network": "xdr_network",
                    "cloud": "xdr_cloud"}

SCAN_MODES = {"local": 1, "hybrid": 2, "central": 3}


def mask_of(keys: list[str], bits: dict[str, int]) -> int:
    mask = 0
    for key in keys:
        mask |= bits[key]
    return mask


def keys_of(mask: int, bits: dict[str, int]) -> list[str]:
    return [key for key, bit in bits.items() if mask & bit]
