"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 11.6) and their provisioning.

``dashboards.render`` turns each dashboard module's ``build()`` into the JSON under
``dashboards/json`` that Grafana loads through ``dashboards/provisioning``.
"""
