"""Board farms: the inventory (``boards.toml``), the device × mode × model matrix, and its Ray scale-out."""

from edgeproof.farm.inventory import DEVICE_PREFIX, LOCAL_DEVICE, Device, get_device, inventory_path, is_device, load_inventory

__all__ = ["DEVICE_PREFIX", "LOCAL_DEVICE", "Device", "get_device", "inventory_path", "is_device", "load_inventory"]
