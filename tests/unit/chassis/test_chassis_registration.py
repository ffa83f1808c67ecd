"""metaproxy.chassis.registration: what is written to Chassis_Private, and when."""

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from metaproxy.chassis.identity import ChassisIdentity
from metaproxy.chassis.registration import Registration, follow_delay_max, registration_operations
from metaproxy.ovsdb.monitor import NotConnected

IDENTITY = ChassisIdentity("compute-1", "br-ovn")
WHERE = [["name", "==", "compute-1"]]


class Transactions:
    def __init__(self):
        self.sent = []
        self.fail_next = False

    def __call__(self, ops, must_match):
        self.sent.append((ops, list(must_match)))
        if self.fail_next:
            self.fail_next = False
            return fail(NotConnected("not connected"))
        return succeed([{"count": 1}] * len(ops))

    def keys_set(self):
        """external_ids keys each transaction sets (insert mutations), in order."""
        out = []
        for ops, _ in self.sent:
            pairs = {}
            for op in ops:
                for column, mutator, value in op["mutations"]:
                    if mutator == "insert":
                        pairs.update(dict(value[1]))
            out.append(pairs)
        return out


def test_registration_removes_the_other_agent_adds_the_id_sets_bridge_and_sb_cfg() -> None:
    ops = registration_operations(IDENTITY, 42)
    assert [op["op"] for op in ops] == ["mutate"] * 3
    assert all(op["table"] == "Chassis_Private" and op["where"] == WHERE for op in ops)
    assert ops[0]["mutations"] == [
        [
            "external_ids",
            "delete",
            [
                "set",
                [
                    "neutron:description-neutron-agent",
                    "neutron:ovn-neutron-agent-id",
                    "neutron:ovn-neutron-agent-sb-cfg",
                ],
            ],
        ]
    ]
    # insert only: an id already there is kept
    assert ops[1]["mutations"] == [
        ["external_ids", "insert", ["map", [["neutron:ovn-metadata-id", IDENTITY.agent_id]]]]
    ]
    assert ops[2]["mutations"][1] == [
        "external_ids",
        "insert",
        ["map", [["neutron:ovn-bridge", "br-ovn"], ["neutron:ovn-metadata-sb-cfg", "42"]]],
    ]


def test_first_nb_cfg_change_is_followed_at_once_later_ones_after_a_random_delay() -> None:
    clock, tx, asked = Clock(), Transactions(), []

    def randint(a, b):
        asked.append((a, b))
        return 7

    reg = Registration(clock, tx, IDENTITY, agent_down_time=75, randint=randint)
    reg.nb_cfg_changed(5)
    clock.advance(0)
    assert tx.keys_set() == [{"neutron:ovn-metadata-sb-cfg": "5"}]
    reg.nb_cfg_changed(6)
    reg.nb_cfg_changed(7)  # coalesced: the pending write takes the latest
    clock.advance(6.9)
    assert len(tx.sent) == 1
    clock.advance(0.2)
    assert tx.keys_set()[1:] == [{"neutron:ovn-metadata-sb-cfg": "7"}]
    assert asked == [(0, 10)]
    assert reg.followed == 2


def test_delay_bound_is_a_third_of_agent_down_time_between_3_and_10() -> None:
    assert [follow_delay_max(t) for t in (1, 9, 12, 30, 75, 600)] == [3, 3, 4, 10, 10, 10]


def test_a_failed_write_is_logged_once_and_the_next_one_clears_it(caplog=None) -> None:
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock, tx = Clock(), Transactions()
        reg = Registration(clock, tx, IDENTITY)
        tx.fail_next = True
        reg.register(3)
        assert "not connected" in reg.last_error and reg.registered == 0
        reg.register(3)
        assert reg.registered == 1 and reg.last_error == ""
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [
        e.get("log_format", "") for e in events if e.get("log_namespace") == "metaproxy.chassis"
    ]
    assert sum("could not" in t for t in texts) == 1
    assert sum("Registered as the OVN metadata agent" in t for t in texts) == 1


def test_stop_cancels_a_pending_write() -> None:
    clock, tx = Clock(), Transactions()
    reg = Registration(clock, tx, IDENTITY, randint=lambda a, b: 5)
    reg.nb_cfg_changed(1)
    clock.advance(0)
    reg.nb_cfg_changed(2)
    reg.stop()
    clock.advance(10)
    assert len(tx.sent) == 1
