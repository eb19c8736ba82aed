"""secretcache: a Lambda extension caching SSM parameters, secrets and KMS decrypts on loopback."""

__version__ = "0.1.0"
