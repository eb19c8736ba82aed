"""Fleet view: what a cache policy costs and whether it survives AWS's throttling at scale."""
