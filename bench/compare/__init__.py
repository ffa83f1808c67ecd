"""C{python -m bench compare}: the same boot storm against two agents in one run.

    python -m bench compare --a metaproxy --b upstream [--c metaproxy-namespaces]
                            [--rounds 2] [storm options]

One fleet, one table and B{one fake Nova} serve the agents, and each agent is started
once. Then the rounds alternate: A, B, A, B, ... (A, B, C, A, B, C with a third agent;
C{--rounds} storms per agent, each a full storm, L{bench.load.storm.run_storm}). After
each storm the agent that served it is given time to go quiet
(L{bench.compare.agents.wait_idle}: upstream keeps working through connections it
accepted after the generator gave up on them), so it does not eat into the next round.

Agents (L{bench.compare.agents.AGENTS}):

  - C{metaproxy}: C{twistd metaproxy} through Neutron's shared socket;
  - C{metaproxy-namespaces}: the same, through its per-namespace sockets;
  - C{upstream}: upstream's C{neutron-metadata-agent} (L{bench.compare.upstream}: its
    own code, with only the port lookup RPC answered from the same table; with
    C{--lookup rpc}, unpatched, over its own RPC client to the same fake
    neutron-server), shared socket only;
  - C{metaproxy-haproxy}, C{upstream-haproxy}: the same agent on its shared socket, behind
    real haproxy in network namespaces, the instances connecting from their own
    namespaces (L{bench.load.nstarget}; root, ip, iptables, haproxy). haproxy retries a
    refused connection (C{retries 3}), as it would in front of upstream on a node.

Agents may be of the same kind (an agent is started per side: an A/A run shows the noise).
Results are kept per round and added up per agent (L{bench.compare.ratios.merge_results}:
requests and errors summed, latencies pooled), then printed side by side with the ratio
B / A (and C / A) of every figure and which agent is better on it
(L{bench.compare.ratios.compare_markdown}). Written: C{<out>/<stamp>-compare.json}
(format L{bench.compare.comparison.FORMAT}: every round's full result, the aggregates,
the ratios), C{<stamp>-compare.md}, C{<stamp>-compare.png} (with matplotlib) and
C{<out>/latest-compare.md}.

Exit status: 0 when every metaproxy agent's request was right (with C{--wrong-secret}:
every one an error C{status 403}); upstream's errors are results, not failures.

The modules: the agents and how they start (L{bench.compare.agents}), the rounds
(L{bench.compare.run}), the finished comparison and its output
(L{bench.compare.comparison}), the ratios and the merging of rounds
(L{bench.compare.ratios}), the command line (L{bench.compare.cli}), and upstream's agent
(L{bench.compare.upstream}, launched by L{bench.compare.upstream_launch}).
"""
