"""`hubmirror sync`: not built yet."""
