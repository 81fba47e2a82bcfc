"""papayya schema migrations: forward-only NNNN_name.sql files, shipped inside the wheel as papayya.migrations."""
