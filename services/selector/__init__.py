"""SelectorService: classifies prompts into domains and ranks the model catalogue for them.

Pure logic lives in :mod:`services.selector.analysis` (prompt features, domain classifier) and
:mod:`services.selector.ranking` (scores, filters, critics); :mod:`services.selector.catalogue` keeps a
cached copy of the providers service's catalogue, :mod:`services.selector.convert` maps to and from the
protos, and :mod:`services.selector.server` wires them to gRPC (``build(settings, listen)``).
"""
