"""shared/service.py freeze_startup_objects: what a service process does once started, for its
garbage collector (the figures behind it: docs/performance.md, sixth session)."""
from __future__ import annotations

import gc

from shared.service import YOUNG_COLLECTION_THRESHOLD, freeze_startup_objects


def test_a_started_process_collects_its_young_objects_less_often_and_rescans_nothing_from_its_start():
    before = gc.get_threshold()
    try:
        freeze_startup_objects()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, before[1], before[2])
        assert YOUNG_COLLECTION_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0  # what was there at start-up: out of every collection's scan
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
