"""The nginx data plane of the collector (``engine: nginx``).

nginx proxies every request; a small njs hook (``js_body_filter``) keeps the response body
and the time of each chunk in variables, and ``access_log`` writes one JSON line per
answered exchange into the collector's state directory. The collector process reads that
file (:mod:`driftwarden.collector.edge.capture_log`), turns each line into the same
:class:`~driftwarden.collector.exchange.Exchange` the Python proxy builds, and feeds the same
pipeline (receivers, redaction, writer); it checkpoints its position only once the rows of
the lines before it are acknowledged, so a crash of the collector loses nothing nginx answered.

* :mod:`.nginx_conf` renders nginx's configuration and the njs hook from a ``CollectorConfig``;
* :mod:`.supervisor` starts, adopts (after a crash of the collector), reloads and stops nginx;
* :mod:`.capture_log` reads, rotates and checkpoints the capture log;
* :mod:`.engine` runs it all as ``driftwarden collector --engine nginx``.
"""
