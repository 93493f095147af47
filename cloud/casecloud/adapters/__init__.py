"""Outside systems the cloud talks to, each behind a small interface with a built-in default."""
