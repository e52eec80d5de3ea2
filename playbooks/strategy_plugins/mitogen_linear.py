"""The runbooks' strategy (ansible.cfg): Ansible's ``linear``, run through Mitogen when it is
installed (requirements.txt), else Ansible's own ``linear`` with a warning.

Mitogen keeps one Python interpreter per host and runs each module in it, where stock Ansible
starts a new interpreter per task: a runbook of ~100 short tasks on the local target costs about
a third of the CPU (deploy.yml: 51 s -> 27 s here, a rerun 28 s -> 11 s). Task semantics are
Ansible's: the strategy only changes how a module reaches the host.

This file stands in for ansible_mitogen/plugins/strategy/mitogen_linear.py, so that ansible.cfg
names a directory of this project rather than a path inside a virtualenv.
"""

from __future__ import annotations

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategy
from ansible.utils.display import Display

try:
    import ansible_mitogen.loaders  # before .strategy, as Mitogen's own entry does
    import ansible_mitogen.strategy
    from ansible_mitogen.affinity import Policy
except ImportError:
    Display().warning(
        "Mitogen is not installed: running Ansible's linear strategy (slower, same results). "
        "Install it with: pip install -r requirements.lock"
    )
    StrategyModule = LinearStrategy
else:
    # No CPU pinning. Mitogen pins its multiplexer to CPU 0 and the controller, its workers and
    # every process they start to the other CPUs, and children inherit the mask: the services a
    # runbook starts (supervisord, the gateways, haproxy) would run on one CPU of a 2-CPU host,
    # and never on CPUs 0-1 of a bigger one. The base Policy pins nothing.
    ansible_mitogen.affinity.policy = Policy()

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, LinearStrategy):
        pass
