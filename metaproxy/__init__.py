"""metaproxy: a Twisted drop-in replacement for neutron-metadata-agent."""

__version__ = "0.1.0"
__all__ = ["__version__"]
