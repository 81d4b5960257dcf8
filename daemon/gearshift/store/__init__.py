"""Store: the durable journal of intents and in-flight operations."""
