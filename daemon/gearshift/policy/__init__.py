"""Policy and provider files: their schema, their loader and its FILE:LINE:COL errors."""
