"""metaproxy.resolve.ovn: the index of Southbound rows and the backend in front of it."""

import attrs
import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from metaproxy.config import default_settings
from metaproxy.ovsdb.data import RowChange
from metaproxy.resolve import backends
from metaproxy.resolve.base import BackendError, LookupUnavailable, Port
from metaproxy.resolve.ovn import OvnBackend, OvnIndex
from metaproxy.resolve.ovn_build import probe_seconds


def dp(network: str) -> dict:
    return {"external_ids": {"name": f"neutron-{network}", "name2": "private"}}


def pb(
    name: str,
    datapath: str,
    mac: tuple = (),
    chassis: tuple = ("ch1",),
    device="vm",
    project="pr",
    owner="compute:nova",
) -> dict:
    return {
        "logical_port": name,
        "datapath": datapath,
        "chassis": chassis,
        "mac": mac,
        "type": "",
        "external_ids": {
            "neutron:device_id": device,
            "neutron:project_id": project,
            "neutron:device_owner": owner,
        },
    }


def index_with(*ports: tuple[str, dict]) -> OvnIndex:
    index = OvnIndex()
    index.set_datapath("d1", dp("net1"))
    index.set_datapath("d2", dp("net2"))
    for uuid, row in ports:
        index.set_port(uuid, row)
    return index


def test_bound_port_found_by_network_and_ip_or_mac() -> None:
    index = index_with(
        (
            "u1",
            pb(
                "p1",
                "d1",
                ("FA:16:3E:00:00:01 10.0.0.5 fd00::0005",),
                device="vm1",
                project="proj1",
            ),
        )
    )
    port = Port(
        "p1", "net1", "fa:16:3e:00:00:01", ("10.0.0.5", "fd00::5"), "vm1", "proj1", "compute:nova"
    )
    assert index.ports_by_ip(["net1"], "10.0.0.5") == [port]
    assert index.ports_by_ip(["net1"], "fd00::5") == [port]
    assert index.ports_by_mac(["net1"], "FA:16:3E:00:00:01") == [port]
    assert index.ports_by_ip(["net2"], "10.0.0.5") == []
    assert index.bound_ports == 1 and index.networks == 2


def test_only_the_first_mac_entry_counts_and_bad_tokens_are_skipped() -> None:
    index = index_with(
        ("u1", pb("p1", "d1", ("fa:16:3e:00:00:02 10.0.0.6 dynamic", "fa:16:3e:00:00:09 10.0.0.9")))
    )
    assert [p.id for p in index.ports_by_ip(["net1"], "10.0.0.6")] == ["p1"]
    assert index.ports_by_ip(["net1"], "10.0.0.9") == []


def test_unbound_or_macless_ports_identify_nobody() -> None:
    index = index_with(
        ("u1", pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",), chassis=())),
        ("u2", pb("p2", "d1", ())),
    )
    assert index.ports_by_ip(["net1"], "10.0.0.5") == [] and index.bound_ports == 0


def test_bind_unbind_ip_change_and_delete() -> None:
    index = index_with()
    row = pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",), chassis=())
    index.set_port("u1", row)
    assert index.ports_by_ip(["net1"], "10.0.0.5") == []
    index.set_port("u1", dict(row, chassis=("ch1",)))
    assert len(index.ports_by_ip(["net1"], "10.0.0.5")) == 1
    index.set_port("u1", dict(row, chassis=("ch1",), mac=("fa:16:3e:00:00:01 10.0.0.7",)))
    assert index.ports_by_ip(["net1"], "10.0.0.5") == []
    assert len(index.ports_by_ip(["net1"], "10.0.0.7")) == 1
    index.set_port("u1", None)
    assert index.ports_by_ip(["net1"], "10.0.0.7") == []
    assert index.ports_by_mac(["net1"], "fa:16:3e:00:00:01") == []


def test_port_before_its_datapath_and_datapath_renamed_or_deleted() -> None:
    index = OvnIndex()
    index.set_port("u1", pb("p1", "d9", ("fa:16:3e:00:00:01 10.0.0.5",)))
    assert index.ports_by_ip(["net9"], "10.0.0.5") == []
    index.set_datapath("d9", dp("net9"))
    assert len(index.ports_by_ip(["net9"], "10.0.0.5")) == 1
    index.set_datapath("d9", dp("net10"))
    assert index.ports_by_ip(["net9"], "10.0.0.5") == []
    assert len(index.ports_by_ip(["net10"], "10.0.0.5")) == 1
    index.set_datapath("d9", None)
    assert index.ports_by_ip(["net10"], "10.0.0.5") == []


def test_router_interfaces_give_the_routers_networks_bound_or_not() -> None:
    index = index_with(
        (
            "r1",
            pb(
                "rif1",
                "d1",
                ("fa:16:3e:ff:00:01 10.0.0.1",),
                chassis=(),
                device="rt",
                owner="network:router_interface",
            ),
        ),
        (
            "r2",
            pb(
                "rif2",
                "d2",
                ("fa:16:3e:ff:00:02 10.1.0.1",),
                chassis=(),
                device="rt",
                owner="network:router_interface_distributed",
            ),
        ),
        ("g", pb("gw", "d2", (), chassis=(), device="rt", owner="network:router_gateway")),
    )
    assert sorted(index.router_networks("rt")) == ["net1", "net2"]
    index.set_port("r1", None)
    assert index.router_networks("rt") == ("net2",)
    index.set_port("r2", None)
    assert index.router_networks("rt") == ()


def test_changes_from_the_monitor() -> None:
    index = OvnIndex()
    index.apply(
        [
            RowChange("Datapath_Binding", "d1", None, dp("net1")),
            RowChange("Chassis", "c1", None, {"name": "c"}),
            RowChange("Port_Binding", "u1", None, pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",))),
        ]
    )
    assert index.chassis == 1 and len(index.ports_by_ip(["net1"], "10.0.0.5")) == 1


class FakeMonitor:
    def __init__(self, **callbacks):
        self.callbacks = callbacks
        self.started = False
        self.resynchronised = []
        self.remote = "tcp:127.0.0.1:6642"

    def start(self):
        self.started = True

    def stop(self):
        return None

    def resynchronise(self, why):
        self.resynchronised.append(why)


class FakeStore:
    def __init__(self, tables):
        self.tables = tables


def test_backend_answers_503_until_synchronised_then_from_memory() -> None:
    from metaproxy.ovsdb.remote import parse_remotes

    monitors = []
    backend = OvnBackend(
        Clock(),
        parse_remotes("tcp:127.0.0.1:6642"),
        monitor_factory=lambda **kw: monitors.append(FakeMonitor(**kw)) or monitors[-1],
    )
    backend.start()
    assert monitors[0].started and not backend.ready()
    failures = []
    backend.ports_by_ip(["net1"], "10.0.0.5").addErrback(failures.append)
    backend.router_networks("rt").addErrback(failures.append)
    assert [f.check(LookupUnavailable) for f in failures] == [LookupUnavailable] * 2
    assert "not synchronised yet" in str(failures[0].value)
    assert "not synchronised yet" in backend.describe()
    monitors[0].callbacks["on_sync"](
        FakeStore(
            {
                "Datapath_Binding": {"d1": dp("net1")},
                "Port_Binding": {"u1": pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",))},
                "Chassis": {"c1": {"name": "c"}},
            }
        )
    )
    assert backend.ready()
    found = []
    backend.ports_by_ip(["net1"], "10.0.0.5").addCallback(found.append)
    assert [p.id for p in found[0]] == ["p1"]
    assert "1 bound ports on 1 networks, 1 chassis" in backend.describe()
    monitors[0].callbacks["on_changes"]([RowChange("Port_Binding", "u1", None, None)])
    backend.ports_by_ip(["net1"], "10.0.0.5").addCallback(found.append)
    assert found[1] == []
    monitors[0].callbacks["on_down"]("connection to tcp:127.0.0.1:6642 lost: gone")
    # never from a copy that may be stale: 503, saying why
    assert not backend.ready()
    assert backend.ports_by_ip_now(["net1"], "10.0.0.5") is None
    assert backend.router_networks_now("rt") is None
    failures = []
    backend.ports_by_ip(["net1"], "10.0.0.5").addErrback(failures.append)
    backend.ports_by_mac(["net1"], "fa:16:3e:00:00:01").addErrback(failures.append)
    assert [f.check(LookupUnavailable) for f in failures] == [LookupUnavailable] * 2
    assert "tcp:127.0.0.1:6642 lost: gone" in str(failures[0].value)
    assert "not current, answering 503" in backend.describe()


def test_a_resumed_connection_applies_the_changes_and_answers_again() -> None:
    from metaproxy.ovsdb.remote import parse_remotes

    monitors = []
    backend = OvnBackend(
        Clock(),
        parse_remotes("tcp:127.0.0.1:6642"),
        monitor_factory=lambda **kw: monitors.append(FakeMonitor(**kw)) or monitors[-1],
    )
    callbacks = monitors[0].callbacks
    callbacks["on_sync"](
        FakeStore(
            {
                "Datapath_Binding": {"d1": dp("net1")},
                "Port_Binding": {"u1": pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",))},
            }
        )
    )
    index = backend.index
    callbacks["on_down"]("member tcp:127.0.0.1:6642 refused: stale")
    assert not backend.ready()
    callbacks["on_resumed"](
        [
            RowChange("Port_Binding", "u1", None, None),
            RowChange("Port_Binding", "u2", None, pb("p2", "d1", ("fa:16:3e:00:00:02 10.0.0.6",))),
        ]
    )
    assert backend.ready() and backend.index is index  # the same index, changed
    assert backend.ports_by_ip_now(["net1"], "10.0.0.5") == []
    assert [p.id for p in backend.ports_by_ip_now(["net1"], "10.0.0.6")] == ["p2"]


def test_several_ports_logged_once_with_the_sync_advice(caplog=None) -> None:
    from twisted.logger import globalLogPublisher

    from metaproxy.ovsdb.remote import parse_remotes

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        monitors = []
        backend = OvnBackend(
            Clock(),
            parse_remotes("tcp:127.0.0.1:6642"),
            monitor_factory=lambda **kw: monitors.append(FakeMonitor(**kw)) or monitors[-1],
        )
        monitors[0].callbacks["on_sync"](
            FakeStore(
                {
                    "Datapath_Binding": {"d1": dp("net1")},
                    "Port_Binding": {
                        "u1": pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",)),
                        "u2": pb("p2", "d1", ("fa:16:3e:00:00:02 10.0.0.5",)),
                    },
                }
            )
        )
        for _ in range(3):
            found = []
            backend.ports_by_ip(["net1"], "10.0.0.5").addCallback(found.append)
            assert len(found[0]) == 2
    finally:
        globalLogPublisher.removeObserver(events.append)
    several = [e for e in events if "More than one port" in e.get("log_format", "")]
    assert len(several) == 1
    from twisted.logger import formatEvent

    text = formatEvent(several[0])
    assert "neutron-ovn-db-sync-util" in text and "p1, p2" in text and "10.0.0.5" in text


def test_built_from_settings_and_registered() -> None:
    settings = attrs.evolve(
        default_settings(),
        lookup_backend="ovn",
        ovn_sb_connection="tcp:127.0.0.1:6642,unix:/run/ovn/sb.sock",
    )
    backend = backends.build_backend(Clock(), settings)
    assert isinstance(backend, OvnBackend)
    assert backends.backend_ready(backend) is False
    assert "tcp:127.0.0.1:6642, unix:/run/ovn/sb.sock" in backends.describe_backend(backend)
    with pytest.raises(BackendError, match=r"\[ovn\] ovn_sb_connection: .*unknown"):
        backends.build_backend(Clock(), attrs.evolve(settings, ovn_sb_connection="udp:1"))
    with pytest.raises(BackendError, match=r"\[ovn\] private key '' cannot be read"):
        backends.build_backend(
            Clock(), attrs.evolve(settings, ovn_sb_connection="ssl:10.0.0.1:6642")
        )


def test_probe_interval_in_seconds_as_ovs_counts_it() -> None:
    assert probe_seconds(0) == 0 and probe_seconds(500) == 1.0 and probe_seconds(60000) == 60.0


def test_the_agent_keeps_no_answers_in_front_of_a_replica() -> None:
    from metaproxy.agent.proxy import Proxy

    settings = attrs.evolve(
        default_settings(), lookup_backend="ovn", cache_enabled=True, cache_expiration_time=600
    )
    proxy = Proxy(MemoryReactorClock(), settings)
    assert isinstance(proxy.backend, OvnBackend) and not proxy.cache.enabled


def test_answers_now_from_the_replica_and_none_before_sync() -> None:
    """The in-memory path (no Deferred) gives the replica's answers once synchronised,
    and None before, so that the request takes the Deferred path and gets 503."""
    from metaproxy.caller import Identity
    from metaproxy.namespace import Namespace, NamespaceKind
    from metaproxy.ovsdb.remote import parse_remotes
    from metaproxy.resolve.base import Instance
    from metaproxy.resolve.cache import CachingBackend
    from metaproxy.resolve.resolver import InstanceResolver

    monitors = []
    backend = OvnBackend(
        Clock(),
        parse_remotes("tcp:127.0.0.1:6642"),
        monitor_factory=lambda **kw: monitors.append(FakeMonitor(**kw)) or monitors[-1],
    )
    resolver = InstanceResolver(CachingBackend(backend, Clock(), ttl=60, enabled=False))
    who = Identity(Namespace(NamespaceKind.OVN, "net1"), "10.0.0.5", None, b"10.0.0.5")
    assert backend.ports_by_ip_now(["net1"], "10.0.0.5") is None
    assert backend.router_networks_now("rt") is None
    assert resolver.resolve_now(who) is None
    monitors[0].callbacks["on_sync"](
        FakeStore(
            {
                "Datapath_Binding": {"d1": dp("net1")},
                "Port_Binding": {"u1": pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.5",))},
                "Chassis": {"c1": {"name": "c"}},
            }
        )
    )
    assert [p.id for p in backend.ports_by_ip_now(["net1"], "10.0.0.5")] == ["p1"]
    assert [p.id for p in backend.ports_by_mac_now(["net1"], "fa:16:3e:00:00:01")] == ["p1"]
    assert resolver.resolve_now(who) == Instance("vm", "pr")


def test_the_southbound_connection_is_in_the_agents_metrics() -> None:
    from metaproxy.agent.proxy import Proxy
    from metaproxy.ops.metrics import render

    settings = attrs.evolve(
        default_settings(),
        lookup_backend="ovn",
        ovn_sb_connection="tcp:127.0.0.1:6642,tcp:127.0.0.2:6642",
    )
    reactor = MemoryReactorClock()
    proxy = Proxy(reactor, settings)
    proxy.backend.start()
    # the first attempt is refused
    host, port, factory = reactor.tcpClients[0][:3]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    text = render(proxy.metrics.snapshot).decode()
    refused = f'remote="tcp:{host}:{port}"'
    assert 'metaproxy_ovsdb_synchronised{database="OVN_Southbound"} 0.0' in text
    state = f'metaproxy_ovsdb_member_state{{database="OVN_Southbound",{refused},state='
    assert state + '"unreachable"} 1.0' in text and state + '"usable"} 0.0' in text
    assert (
        f'metaproxy_ovsdb_member_refusals_total{{database="OVN_Southbound",{refused},'
        'state="unreachable"} 1.0' in text
    )
    assert (
        f'metaproxy_ovsdb_connection_attempts_total{{database="OVN_Southbound",{refused}}} 1.0'
        in text
    )
    assert text.count("metaproxy_ovsdb_member_state{") == 2 * 7
    proxy.backend.stop()


def _sliced_backend(rows_per_slice=2):
    from metaproxy.ovsdb.remote import parse_remotes

    clock, monitors = Clock(), []
    backend = OvnBackend(
        clock,
        parse_remotes("tcp:127.0.0.1:6642"),
        monitor_factory=lambda **kw: monitors.append(FakeMonitor(**kw)) or monitors[-1],
        rows_per_slice=rows_per_slice,
    )
    return clock, backend, monitors[0].callbacks


def _five_ports():
    return FakeStore(
        {
            "Datapath_Binding": {"d1": dp("net1")},
            "Port_Binding": {
                f"u{n}": pb(f"p{n}", "d1", (f"fa:16:3e:00:00:0{n} 10.0.0.{n}",))
                for n in range(1, 6)
            },
        }
    )


def test_a_large_full_copy_is_indexed_a_slice_per_turn_answering_503_meanwhile() -> None:
    from tests.doubles import reactor_turn

    clock, backend, callbacks = _sliced_backend()
    callbacks["on_sync"](_five_ports())  # 6 rows: 3 slices of 2
    assert not backend.ready()
    assert backend.ports_by_ip_now(["net1"], "10.0.0.1") is None
    failures = []
    backend.ports_by_ip(["net1"], "10.0.0.1").addErrback(failures.append)
    assert failures[0].check(LookupUnavailable)
    # a change that comes meanwhile waits for the whole index
    callbacks["on_changes"]([RowChange("Port_Binding", "u1", None, None)])
    assert reactor_turn(clock) == 1 and not backend.ready()
    assert reactor_turn(clock) == 1 and backend.ready()
    assert backend.ports_by_ip_now(["net1"], "10.0.0.1") == []
    assert [p.id for p in backend.ports_by_ip_now(["net1"], "10.0.0.5")] == ["p5"]
    assert backend.index.bound_ports == 4


def test_lost_while_indexed_it_stays_503_and_a_resumption_brings_it_live() -> None:
    from tests.doubles import reactor_turn

    clock, backend, callbacks = _sliced_backend()
    callbacks["on_sync"](_five_ports())
    callbacks["on_down"]("connection to tcp:127.0.0.1:6642 lost: gone")
    while reactor_turn(clock):
        pass
    assert not backend.ready() and backend.index.bound_ports == 5
    # lost again while a second full copy is indexed; resumed before it is whole
    callbacks["on_sync"](_five_ports())
    callbacks["on_down"]("connection to tcp:127.0.0.1:6642 lost: gone")
    callbacks["on_resumed"]([RowChange("Port_Binding", "u2", None, None)])
    assert not backend.ready()
    while reactor_turn(clock):
        pass
    assert backend.ready()
    assert backend.ports_by_ip_now(["net1"], "10.0.0.2") == []
    assert backend.index.bound_ports == 4


def test_a_newer_full_copy_replaces_one_still_being_indexed() -> None:
    from tests.doubles import reactor_turn

    clock, backend, callbacks = _sliced_backend()
    callbacks["on_sync"](_five_ports())
    callbacks["on_changes"]([RowChange("Port_Binding", "u1", None, None)])
    newer = FakeStore(
        {
            "Datapath_Binding": {"d1": dp("net1")},
            "Port_Binding": {"u9": pb("p9", "d1", ("fa:16:3e:00:00:09 10.0.0.9",))},
        }
    )
    callbacks["on_sync"](newer)  # 2 rows: one slice, at once
    assert backend.ready() and backend.index.bound_ports == 1
    while reactor_turn(clock):
        pass
    assert backend.index.bound_ports == 1
    assert backend.ports_by_ip_now(["net1"], "10.0.0.1") == []
    assert [p.id for p in backend.ports_by_ip_now(["net1"], "10.0.0.9")] == ["p9"]


def test_stopped_while_a_full_copy_is_indexed_no_slice_runs_after() -> None:
    clock, backend, callbacks = _sliced_backend()
    callbacks["on_sync"](_five_ports())
    failures = []
    backend.ports_by_ip(["net1"], "10.0.0.1").addErrback(failures.append)
    assert "indexing the full copy from tcp:127.0.0.1:6642" in str(failures[0].value)
    backend.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(1)
    assert not backend.ready()


@pytest.mark.logged_errors
def test_a_full_copy_that_cannot_be_indexed_leaves_no_older_index_to_answer_from() -> None:
    from tests.doubles import reactor_turn

    clock, backend, callbacks = _sliced_backend()
    small = FakeStore(
        {
            "Datapath_Binding": {"d1": dp("net1")},
            "Port_Binding": {"u1": pb("p1", "d1", ("fa:16:3e:00:00:01 10.0.0.1",))},
        }
    )
    callbacks["on_sync"](small)  # 2 rows: indexed at once
    assert backend.ready()
    callbacks["on_down"]("connection to tcp:127.0.0.1:6642 lost: gone")
    broken = _five_ports()
    broken.tables["Port_Binding"]["u5"]["external_ids"] = None  # fails in the 3rd slice
    callbacks["on_sync"](broken)
    while reactor_turn(clock):
        pass
    assert backend.monitor.resynchronised == ["the index of the full copy could not be built"]
    # a resumption on the way must not bring the index of the older copy back
    callbacks["on_resumed"]([RowChange("Port_Binding", "u2", None, None)])
    assert not backend.ready() and backend.index is None
    failures = []
    backend.ports_by_ip(["net1"], "10.0.0.1").addErrback(failures.append)
    assert "could not be indexed" in str(failures[0].value)
    # the full copy asked for again is indexed and answered from
    callbacks["on_sync"](_five_ports())
    while reactor_turn(clock):
        pass
    assert backend.ready()
    assert [p.id for p in backend.ports_by_ip_now(["net1"], "10.0.0.5")] == ["p5"]
