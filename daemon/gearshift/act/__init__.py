"""Act: carry plans out on providers (machines) and the platform (districts, gear moves)."""
