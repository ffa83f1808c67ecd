"""Names and values the ``metaproxy`` command's tests share."""

ROUTER = "qrouter-3f5d8c3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
DHCP = "qdhcp-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
OVN = "ovnmeta-0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9"
SECRET = "s3cr3t-never-shown"
