# mender-rs boot script for U-Boot builds without the Mender patches
# (compile: mkimage -A <arch> -T script -C none -d boot.cmd boot.scr).
#
# The Mender variables live in a file on the boot partition, in the format
# of a single-copy U-Boot environment (CRC32 + "name=value\0" ... padded to
# mender_env_size): what `env export -c -s` writes and what libubootenv and
# mender-rs read and write with the fw_env.config line
#     /boot/efi/uboot.env 0x0 0x4000
# (the path being where user space mounts the boot partition).
#
# A/B rule (spec 6.5/6.6): an uncommitted update (upgrade_available=1) gets
# one try: bootcount 0 -> 1. Found again with bootcount != 0, it did not
# commit: switch mender_boot_part back, upgrade_available=0, bootcount=0.
# No arithmetic (some U-Boot builds lack setexpr): only bootcount 0/1 matter.
#
# Only the variables in mender_env_vars are taken from and written to the
# file; the rest of U-Boot's environment stays the built-in one.

# ---- defines: the layer's recipe sets these for the machine -------------
setenv mender_rootfsa_part 2
setenv mender_rootfsb_part 3
setenv mender_rootfsa_part_hex 2
setenv mender_rootfsb_part_hex 3
setenv mender_kernel_root_base /dev/vda
setenv mender_kernel_path /boot/vmlinuz
setenv mender_initrd_path /boot/initrd.img
setenv mender_boot_kernel_type zboot
setenv mender_kernel_args "console=ttyS0,115200 rootwait"
setenv mender_env_file uboot.env
setenv mender_env_size 0x4000
# ---- end of defines -----------------------------------------------------

# The disk and boot partition: the ones distro boot found this script on,
# unless the board set them.
if test -z "${mender_uboot_if}"; then setenv mender_uboot_if ${devtype}; fi
if test -z "${mender_uboot_dev}"; then setenv mender_uboot_dev ${devnum}; fi
if test -z "${mender_uboot_boot_part}"; then setenv mender_uboot_boot_part ${distro_bootpart}; fi
if test -z "${mender_env_addr}"; then setenv mender_env_addr ${loadaddr}; fi
setenv mender_uboot_boot "${mender_uboot_if} ${mender_uboot_dev}:${mender_uboot_boot_part}"
setenv mender_env_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount mender_saveenv_canary mender_check_saveenv_canary"

# ---- load -----------------------------------------------------------------
setenv mender_env_dirty 0
setenv mender_boot_part
setenv mender_boot_part_hex
setenv upgrade_available
setenv bootcount
setenv mender_saveenv_canary
setenv mender_check_saveenv_canary
if fatload ${mender_uboot_boot} ${mender_env_addr} ${mender_env_file} && env import -c ${mender_env_addr} ${mender_env_size} ${mender_env_vars}; then
  echo "mender: environment loaded from ${mender_env_file}"
else
  echo "mender: no valid environment in ${mender_env_file}: starting from the defaults"
  setenv mender_env_dirty 1
fi

# ---- validate: mender_boot_part in {A, B}, upgrade_available and bootcount
# in {0, 1}; otherwise A (or B when it names B), nothing pending ------------
setenv mender_env_valid 1
if test "${mender_boot_part}" != "${mender_rootfsa_part}" && test "${mender_boot_part}" != "${mender_rootfsb_part}"; then setenv mender_env_valid 0; fi
if test "${upgrade_available}" != "0" && test "${upgrade_available}" != "1"; then setenv mender_env_valid 0; fi
if test "${bootcount}" != "0" && test "${bootcount}" != "1"; then setenv mender_env_valid 0; fi
if test "${mender_env_valid}" != "1"; then
  echo "mender: invalid or missing variables (mender_boot_part=${mender_boot_part} upgrade_available=${upgrade_available} bootcount=${bootcount}): resetting"
  if test "${mender_boot_part}" != "${mender_rootfsb_part}"; then setenv mender_boot_part ${mender_rootfsa_part}; fi
  setenv upgrade_available 0
  setenv bootcount 0
  setenv mender_env_dirty 1
fi

# The canary: shows user space that it reads the environment we write.
if test "${mender_saveenv_canary}" != "1"; then setenv mender_saveenv_canary 1; setenv mender_env_dirty 1; fi
if test "${mender_check_saveenv_canary}" != "1"; then setenv mender_check_saveenv_canary 1; setenv mender_env_dirty 1; fi

# ---- the A/B rule -----------------------------------------------------------
if test "${upgrade_available}" = "1"; then
  if test "${bootcount}" = "0"; then
    echo "mender: trying the update on partition ${mender_boot_part}"
    setenv bootcount 1
  else
    echo "mender: the update on partition ${mender_boot_part} was tried and not committed: rolling back"
    if test "${mender_boot_part}" = "${mender_rootfsa_part}"; then
      setenv mender_boot_part ${mender_rootfsb_part}
    else
      setenv mender_boot_part ${mender_rootfsa_part}
    fi
    setenv upgrade_available 0
    setenv bootcount 0
  fi
  setenv mender_env_dirty 1
fi

# The hex form always follows the decimal one.
if test "${mender_boot_part}" = "${mender_rootfsa_part}"; then
  setenv mender_want_hex ${mender_rootfsa_part_hex}
else
  setenv mender_want_hex ${mender_rootfsb_part_hex}
fi
if test "${mender_boot_part_hex}" != "${mender_want_hex}"; then
  setenv mender_boot_part_hex ${mender_want_hex}
  setenv mender_env_dirty 1
fi

# ---- save (only on change) ---------------------------------------------------
if test "${mender_env_dirty}" = "1"; then
  if env export -c -s ${mender_env_size} ${mender_env_addr} ${mender_env_vars} && fatwrite ${mender_uboot_boot} ${mender_env_addr} ${mender_env_file} ${mender_env_size}; then
    echo "mender: environment saved to ${mender_env_file}"
  elif test "${upgrade_available}" = "1"; then
    # The try cannot be counted: booting the update could loop forever.
    # Boot the committed partition; user space sees the update did not run.
    echo "mender: cannot save the environment: booting the committed partition instead of the update"
    if test "${mender_boot_part}" = "${mender_rootfsa_part}"; then
      setenv mender_boot_part ${mender_rootfsb_part}
      setenv mender_boot_part_hex ${mender_rootfsb_part_hex}
    else
      setenv mender_boot_part ${mender_rootfsa_part}
      setenv mender_boot_part_hex ${mender_rootfsa_part_hex}
    fi
  else
    echo "mender: cannot save the environment"
  fi
fi

# ---- boot -----------------------------------------------------------------------
setenv mender_uboot_root "${mender_uboot_if} ${mender_uboot_dev}:${mender_boot_part_hex}"
setenv mender_kernel_root ${mender_kernel_root_base}${mender_boot_part}
setenv bootargs "root=${mender_kernel_root} ${mender_kernel_args}"
echo "mender: booting partition ${mender_boot_part} (${mender_kernel_root})"
if ext4load ${mender_uboot_root} ${kernel_addr_r} ${mender_kernel_path}; then
  setenv mender_initrd "-"
  setenv mender_initrd_size 0
  if ext4load ${mender_uboot_root} ${ramdisk_addr_r} ${mender_initrd_path}; then
    setenv mender_initrd ${ramdisk_addr_r}:${filesize}
    setenv mender_initrd_size ${filesize}
  fi
  if test "${mender_boot_kernel_type}" = "zboot"; then
    if test "${mender_initrd}" = "-"; then
      zboot ${kernel_addr_r}
    else
      zboot ${kernel_addr_r} 0 ${ramdisk_addr_r} ${mender_initrd_size}
    fi
  else
    ${mender_boot_kernel_type} ${kernel_addr_r} ${mender_initrd} ${fdt_addr_r}
  fi
fi

# Only reached when the kernel could not be loaded or started.
if test "${upgrade_available}" = "1"; then
  echo "mender: the update on partition ${mender_boot_part} does not boot: resetting (the next boot rolls back)"
  reset
fi
echo "mender: cannot boot partition ${mender_boot_part}"
