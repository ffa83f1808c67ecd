"""Namespaces added and removed while instances are booting."""

from __future__ import annotations

import subprocess
import threading

from tests.e2e.conftest import BOOT_REQUESTS, HAPROXY_503, wait_until


class Booters:
    """Instances booting over and over in the background, every answer checked."""

    def __init__(self, e2e, instances):
        self.e2e = e2e
        self.instances = instances
        self.done = {i.name: 0 for i in instances}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in instances
        ]

    def _loop(self, instance):
        while not self.stop.is_set():
            try:
                report = self.e2e.client(instance)
                self.e2e.assert_own(instance, report, count=BOOT_REQUESTS)
            except Exception as e:  # reported by the test, in the main thread
                self.failures.append(f"{instance.name}: {e!r}"[:2000])
            self.done[instance.name] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def snapshot(self):
        return dict(self.done)

    def advanced_since(self, snapshot):
        """Every instance finished at least one whole boot since C{snapshot}."""
        return all(self.done[name] >= count + 2 for name, count in snapshot.items())


def _netns_exists(name):
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return name in {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_namespaces_added_and_removed_while_instances_request(e2e):
    topo = e2e.topo
    shared, own = e2e.site("shared"), e2e.site("own")
    background = [
        shared.instances["a1"],
        shared.instances["d"],
        own.instances["a2"],
        own.instances["d"],
        own.instances["o"],
    ]

    with Booters(e2e, background) as booters:
        assert wait_until(lambda: booters.advanced_since({i.name: 0 for i in background}), 60)

        # a router (added with `metaproxy ctl`) and an OVN network (added by dropping a
        # file in namespace_dir), each with an instance and haproxy on its own socket
        c_net, p_net = e2e.net("dyn", "c"), e2e.net("dyn", "p")
        r3 = topo.add_router(e2e.net("dyn", "r3"), {c_net: "10.0.0.1/24"})
        ovn = topo.add_ovn(p_net, "10.0.0.2/24")
        c = topo.add_instance("dyn-c", (r3, c_net), "10.0.0.5", "fa:16:3e:e2:0f:01")
        p = topo.add_instance("dyn-p", (ovn, p_net), "10.0.0.5", "fa:16:3e:e2:0f:02")
        e2e.device_of[c.namespace] = e2e.device("dyn", "c")
        e2e.device_of[p.namespace] = e2e.device("dyn", "p")
        for namespace in (r3, ovn):
            topo.start_haproxy(namespace, config_file=e2e.config)
            assert not e2e.ns_socket(namespace).exists()
        # not served yet: haproxy finds no socket and answers its own 503
        for report in e2e.clients([(c, {"paths": ["/openstack"]}), (p, {"paths": ["/openstack"]})]):
            assert [a["status"] for a in report["requests"]] == [503]
            assert HAPROXY_503 in report["requests"][0]["body"]

        mark = booters.snapshot()
        added = e2e.ctl("add", r3.name)
        assert added.returncode == 0, added.stderr
        assert e2e.ns_socket(r3).exists()
        (e2e.namespace_dir / ovn.name).touch()
        assert wait_until(lambda: e2e.ns_socket(ovn).exists(), 15)
        assert {r3.name, ovn.name} <= set(e2e.ctl("list").stdout.split())
        for instance, report in zip((c, p), e2e.clients([(c, {}), (p, {})]), strict=False):
            e2e.assert_own(instance, report, count=BOOT_REQUESTS)
        assert wait_until(lambda: booters.advanced_since(mark), 60)

        mark = booters.snapshot()
        removed = e2e.ctl("remove", r3.name)
        assert removed.returncode == 0, removed.stderr
        assert not e2e.ns_socket(r3).exists()
        (e2e.namespace_dir / ovn.name).unlink()
        assert wait_until(lambda: not e2e.ns_socket(ovn).exists(), 15)
        assert not {r3.name, ovn.name} & set(e2e.ctl("list").stdout.split())
        # their haproxy is still there, and has nowhere to go
        for report in e2e.clients([(c, {"paths": ["/openstack"]}), (p, {"paths": ["/openstack"]})]):
            assert [a["status"] for a in report["requests"]] == [503]
        for namespace in (c, p, r3, ovn):
            topo.remove(namespace)
            assert not _netns_exists(str(namespace))
        assert wait_until(lambda: booters.advanced_since(mark), 60)

    assert booters.failures == []
    # the other namespaces were all served throughout
    for namespace in (*shared.namespaces, *own.namespaces):
        assert _netns_exists(namespace.name)
    for namespace in own.namespaces:
        assert e2e.ns_socket(namespace).exists()
