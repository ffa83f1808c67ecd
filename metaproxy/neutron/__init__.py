"""What metaproxy shares with Neutron: the RPC bus, Keystone sessions, the agent's state
reports and haproxy's configuration."""
