"""The fakes the bench and the tests run metaproxy against: Nova's metadata API
(L{bench.fakes.nova}, serving L{bench.fakes.novatree}), Keystone and Neutron's API
(L{bench.fakes.neutron}), a neutron-server on a message bus
(L{bench.fakes.neutronserver}) with its private RabbitMQ (L{bench.fakes.rabbitmq}), and an
OVN Southbound database (L{bench.fakes.ovnsb})."""
