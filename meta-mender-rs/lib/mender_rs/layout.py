"""Partition numbers, device names and sizes of the A/B layout.

Every function takes `get`, a callable returning a variable's value as a
string (or None): BitBake's d.getVar, or a dict's .get in the tests.
"""
import re

MIB = 1024 * 1024


def _int(get, name, default=0):
    v = get(name)
    if v is None or str(v).strip() == "":
        return default
    try:
        return int(str(v).strip(), 0)
    except ValueError:
        raise ValueError("%s = '%s' is not a number" % (name, v))


def device_base(device):
    """Prefix of the partition devices: /dev/sda -> /dev/sda, /dev/mmcblk0 -> /dev/mmcblk0p."""
    if re.match(r"^/dev/[shv]d[a-z]+$", device or ""):
        return device
    return (device or "") + "p"


def table_type(get):
    """gpt for the UEFI and GPT images, msdos (MBR) otherwise."""
    t = (get("MENDER_PARTITION_TABLE_TYPE") or "").strip()
    if t:
        return t
    feats = (get("MENDER_FEATURES") or "").split()
    if "mender-image-uefi" in feats or "mender-image-gpt" in feats:
        return "gpt"
    return "msdos"


def partitions(get):
    """The partitions in disk order, as (role, number)."""
    roles = []
    if _int(get, "MENDER_BOOT_PART_SIZE_MB", 16) > 0:
        roles.append("boot")
    roles += ["a", "b"]
    if _int(get, "MENDER_SWAP_PART_SIZE_MB", 0) > 0:
        roles.append("swap")
    roles.append("data")
    roles += ["extra%d" % i for i in range(len((get("MENDER_EXTRA_PARTS") or "").split()))]
    out = []
    logical = table_type(get) == "msdos" and len(roles) > 4
    for i, role in enumerate(roles):
        # MBR: beyond four partitions the fourth is the extended container
        # and the rest are logical partitions numbered from 5.
        out.append((role, i + 2 if logical and i >= 3 else i + 1))
    return out


def part_number(get, role):
    """Number of the partition with that role ('boot', 'a', 'b', 'swap', 'data'), '' when absent."""
    for r, n in partitions(get):
        if r == role:
            return str(n)
    return ""


def alignment(get):
    return max(_int(get, "MENDER_PARTITION_ALIGNMENT", 8 * MIB), 1024)


def _align_up(v, a):
    return (v + a - 1) // a * a


def uboot_env_offsets(get):
    """(offset 1, offset 2, aligned size of one copy) of the U-Boot environment on the storage device."""
    a = alignment(get)
    size = _int(get, "BOOTENV_SIZE", 0x20000)
    aligned = _align_up(size, a)
    first = _int(get, "MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET", a)
    return first, first + aligned, aligned


def reserved_bootloader_space(get):
    """Bytes kept free before the first partition for the U-Boot environment copies."""
    feats = (get("MENDER_FEATURES") or "").split()
    if "mender-uboot" in feats and (get("MENDER_UBOOT_ENV_STORAGE") or "boot-file") == "device":
        return 2 * uboot_env_offsets(get)[2]
    return 0


def rootfs_size_kb(get):
    """Size of each rootfs partition in KiB: what remains of the storage after
    boot, data, swap, extra partitions, reserved space and alignment, halved
    and rounded down to the alignment."""
    a = alignment(get)
    total = _int(get, "MENDER_STORAGE_TOTAL_SIZE_MB", 1024) * MIB
    used = (_int(get, "MENDER_BOOT_PART_SIZE_MB", 16) + _int(get, "MENDER_DATA_PART_SIZE_MB", 128)
            + _int(get, "MENDER_SWAP_PART_SIZE_MB", 0)) * MIB
    for p in (get("MENDER_EXTRA_PARTS") or "").split():
        used += _int(get, "MENDER_EXTRA_PARTS_SIZES_MB[%s]" % p, 0) * MIB
    reserved = _align_up(_int(get, "MENDER_RESERVED_SPACE_BOOTLOADER_DATA", reserved_bootloader_space(get)), a)
    # the first partition starts one alignment in; each partition may lose up to one alignment
    overhead = a + reserved + len(partitions(get)) * a
    size = (total - used - overhead) // 2 // a * a
    if size <= 0:
        raise ValueError("MENDER_STORAGE_TOTAL_SIZE_MB (%d) leaves no space for the two rootfs partitions "
                         "after boot, data, swap and alignment" % (total // MIB))
    return size // 1024


def hexnum(n):
    """Partition number as U-Boot wants it in mender_boot_part_hex (upper case, no 0x)."""
    return "%X" % int(n) if str(n).strip() else ""


def check_rootfs_fits(image_bytes, partition_kb, image_name):
    """None when the filesystem image fits its partition, else the error message."""
    limit = int(partition_kb) * 1024
    if image_bytes > limit:
        return ("%s is %d KiB, larger than the rootfs partition (%d KiB, MENDER_CALC_ROOTFS_SIZE). "
                "Make the image smaller, or raise MENDER_STORAGE_TOTAL_SIZE_MB (or lower "
                "MENDER_DATA_PART_SIZE_MB / MENDER_BOOT_PART_SIZE_MB)."
                % (image_name, (image_bytes + 1023) // 1024, int(partition_kb)))
    return None
