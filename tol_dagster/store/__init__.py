"""The local store: where bytes live on disk and how they change without ever being half-written.

Owns the on-disk layout, the one atomic write and the file lock, sha256 hashing, the manifest,
mirror generations (publish by symlink switch, pins), staging and partials, quarantine, cleanup,
drift of published files against the manifest, the free-disk check, the per-file results
cache and the files shared (hard-linked) with a user's folder. May import: the foundations and `hub` (today it needs only the foundations: planning
against the Hub's listing is the resync's).
"""
