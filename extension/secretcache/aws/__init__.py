"""A lean AWS client for the three JSON 1.1 services we call: SigV4 over asyncio with ssl.

Loads in a few milliseconds and a few MiB, where aiobotocore takes ~0.3 s of CPU and ~40 MiB
(figures in bench/README.md). botocore is imported only for credentials this package does not
resolve itself (profiles, SSO, instance metadata, assumed roles).
"""
