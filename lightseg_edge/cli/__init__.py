"""Console entry points (``lightseg-*``); each module's ``main(argv) -> int``."""
