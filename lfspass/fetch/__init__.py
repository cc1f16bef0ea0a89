"""Downloads: resumable transfers, sha256 and gpgv signature verification, the cache.

Imports the spine only.
"""
