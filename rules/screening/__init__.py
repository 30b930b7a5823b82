"""Green-factory screening (`greenmon screen`), resource-efficiency classes (`greenmon classify`).

Reads what the aggregator measured (``energy`` daily and monthly windows, ``meter_energy`` of
generation meters) and the registry (land, declared attributes, monthly statistics), judges it
with versioned criteria files (`criteria`), and writes its decisions to the ``screening`` and
``efficiency_class`` measurements and, on request, a self-contained HTML report.
"""
