"""Real parts for tests and the offline demo: Distribution registries on loopback, a Docker Hub
emulator in front of one, and builders that push realistic images. Not used by the mirror itself."""
