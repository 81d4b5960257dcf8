"""Platform adapters: how a node enters and leaves the PaaS (districts, gear moves)."""
