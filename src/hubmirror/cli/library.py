"""`hubmirror library`: not built yet."""
