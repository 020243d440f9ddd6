"""The test registries' user and password (imported by tests as ``from _auth import USER, PASSWORD``)."""

USER, PASSWORD = "mirror", "s3cret-Pa55word-not-for-logs"
