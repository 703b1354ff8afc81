"""Board farms: the inventory (``boards.toml``), the device × mode × model matrix, its Ray scale-out, and
boards met (a board profile validated and calibrated against a device's measurements)."""

from edgeproof.farm.inventory import DEVICE_PREFIX, LOCAL_DEVICE, Device, get_device, inventory_path, is_device, load_inventory

__all__ = ["DEVICE_PREFIX", "LOCAL_DEVICE", "Device", "get_device", "inventory_path", "is_device", "load_inventory"]
