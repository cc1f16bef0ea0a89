"""The kernel stage: Kconfig requests and their explanations, source trees and tarballs,
the out-of-tree build, the LFS install, and the `kernel:*` doit tasks.

Imports the spine only.
"""
