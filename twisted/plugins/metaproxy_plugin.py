"""twistd plugin: ``twistd metaproxy`` (lazy; imports metaproxy.tap only when used)."""

from twisted.application.service import ServiceMaker

metaproxy = ServiceMaker(
    "metaproxy",
    "metaproxy.tap",
    "Neutron metadata agent replacement: Unix sockets from haproxy -> Nova metadata API",
    "metaproxy",
)
