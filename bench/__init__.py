"""metaproxy's bench: the fake Nova, the boot-storm load generator and its reports."""
