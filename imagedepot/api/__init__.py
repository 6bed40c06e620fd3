"""HTTP entry points: one module per API dialect, mounted together by `app`."""
