"""`hubmirror copy`: not built yet."""
