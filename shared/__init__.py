# Wire contract shared by clock, edge and cloud: `nightlink.shared` on CPython and, on the
# board, the package /lib/nightlink/shared.
