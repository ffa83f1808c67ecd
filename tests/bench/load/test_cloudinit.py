"""cloud-init's boot sequence as the bench and the end-to-end tests replay it."""

import pytest

from bench.fakes import novatree
from bench.fakes.novatree import InstanceRecord
from bench.load import cloudinit

RECORD = InstanceRecord(
    instance_id="vm-1",
    project_id="p",
    hostname="vm-1",
    local_ipv4="10.0.0.5",
    user_data=None,
    public_keys={"mykey": "ssh-ed25519 AAAA"},
    floating_ip="",
    availability_zone="nova",
)


def replay(fetch):
    sequence = cloudinit.boot_sequence()
    path, asked = next(sequence), []
    while True:
        asked.append(path)
        try:
            path = sequence.send(fetch(path))
        except StopIteration as done:
            return done.value, asked


def nova(record):
    def fetch(path):
        status, _, body = novatree.lookup(record, path)
        return status, body

    return fetch


def test_first_boot_is_28_requests_in_cloud_inits_order():
    """Two probes, five OpenStack files, 21 EC2 requests: 28 for an instance with a key."""
    tree, asked = replay(nova(RECORD))
    assert len(asked) == 28
    assert asked[:2] == ["/openstack", "/openstack"]
    assert asked[2:7] == [f"/openstack/2018-08-27/{f}" for f in cloudinit.OPENSTACK_FILES]
    assert asked[7] == "/latest/meta-data/" and asked[-1] == "/latest/meta-data/security-groups"
    assert tree["user_data"] is None  # 404 is fine for user data
    assert tree["ec2"]["public-keys"] == {"mykey": "ssh-ed25519 AAAA"}
    assert tree["ec2"]["instance-id"].startswith("i-")


def test_no_keypair_is_26_requests():
    """Without a keypair the crawl skips public-keys: 26 requests."""
    _, asked = replay(
        nova(
            InstanceRecord(instance_id="vm-2", project_id="p", hostname="h", local_ipv4="10.0.0.6")
        )
    )
    assert len(asked) == 26


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_bad_status_fails_the_boot(status):
    """A status cloud-init would not accept ends the boot with BootFailed at that path."""

    def fetch(path):
        if path == "/openstack/2018-08-27/meta_data.json":
            return status, b""
        return nova(RECORD)(path)

    with pytest.raises(cloudinit.BootFailed) as info:
        replay(fetch)
    assert info.value.path.endswith("meta_data.json") and info.value.status == status
