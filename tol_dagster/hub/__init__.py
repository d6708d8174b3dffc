"""The Hub: everything that talks to the Hugging Face Hub (or the local one) and nothing else.

Owns the client (metadata, retries, downloads verified by sha256), the dataset card's reading and
the validation of every untrusted value the Hub sends before it is used in a path.
May import: `errors`, `schema`, `settings`-free foundations only; never `store` or later stages.
"""
