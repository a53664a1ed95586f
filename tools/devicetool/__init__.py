"""Device tooling: build the clock's filesystem image, provision it, flash it, deploy to it."""
