"""Path parameters, bounded: a value out of bounds names no resource (404 in each dialect),
and never reaches a service (an id past int4 would overflow its column)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Path

from shared.validation import INT32_MAX

OrderNumber = Annotated[str, Path(min_length=1, max_length=32)]
Code = Annotated[str, Path(min_length=1, max_length=255)]
Id = Annotated[int, Path(ge=1, le=INT32_MAX)]
Hash = Annotated[str, Path(min_length=1, max_length=64)]  # GetCandy's ids
