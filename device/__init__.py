# Desk clock firmware: `nightlink.device` on CPython and, on the board, the package
# /lib/nightlink/device (main.py and boot.py also sit at the filesystem root as the entry points).
