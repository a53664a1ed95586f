# Wire contract shared by clock, edge and cloud (CPython package marker; on the board these
# modules are deployed flat to /lib).
