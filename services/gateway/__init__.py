"""The gateway: maps the public REST dialects (Solidus, GetCandy) onto service commands."""
