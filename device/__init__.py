# Desk clock firmware package marker (CPython host only; the board loads modules flat from /lib).
