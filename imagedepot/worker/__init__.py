"""The worker: claims caches that need work and drives them to their next phase."""
