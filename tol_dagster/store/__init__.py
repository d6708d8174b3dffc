"""The local store: where bytes live on disk and how they change without ever being half-written.

Owns the on-disk layout, the one atomic write and the file lock, sha256 hashing, the manifest,
mirror generations (publish by symlink switch, pins, cleanup) and the per-file results cache.
May import: the foundations and `hub` (the manifest is built from the Hub's file list).
"""
