"""The pure core: entities, value objects and rules, with no I/O and no framework."""
