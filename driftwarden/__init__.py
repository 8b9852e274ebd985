"""driftwarden: self-hosted monitoring and drift observability for models on your own infrastructure.

One import package. Its layers, imported downward only (``tests/test_layout.py``):

- the command line and ``up`` (``driftwarden.cli``, ``.commands``, ``.up``, ``.demo``, ``.listen``);
- the collector (``driftwarden.collector``) and the detectors (``driftwarden.detectors``);
  the collector never imports the detectors;
- the dashboards (``driftwarden.dashboards``);
- the store (``driftwarden.storage``);
- the shared bottom: ``driftwarden.errors``, ``driftwarden.version``, ``driftwarden.auth``.
"""
