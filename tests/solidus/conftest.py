from __future__ import annotations

V1 = 1  # demo variant priced 19.99
ADMIN = {"Authorization": "Bearer test-admin-key"}
