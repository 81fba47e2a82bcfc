"""papayya schema migrations: forward-only NNNN_name.sql files.

Shipped inside the wheel as the package ``papayya.migrations``.
"""
