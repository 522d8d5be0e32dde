"""Helpers of the meta-mender-rs layer (plain Python, no BitBake imports).

layer.conf makes them available to the metadata with `addpylib`, as
`mender_rs.<module>.<function>(...)`. The tests under tests/yocto/ import
them directly.
"""

BBIMPORTS = ["features", "layout", "statescripts", "menderconf", "bootstrap"]
